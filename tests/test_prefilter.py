"""Which files the text prefilter hands to libcst: the scripts and model files a finding can need,
and not the rest of a large library."""

from pathlib import Path

from bnaudit.source import prefilter
from bnaudit.source.discover import module_name


def select(tmp_path: Path, files: dict[str, str]) -> set[str]:
    texts = {}
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        texts[str(path)] = text
    modules = {path: module_name(Path(path)) for path in texts}
    return {str(Path(path).relative_to(tmp_path)) for path in prefilter.select(texts, modules)}


LAYER = "import tensorflow as tf\ndef conv_bn(x):\n    return tf.layers.batch_normalization(x, training=True)\n"


def test_a_plain_model_file_between_the_script_and_the_layers_is_parsed(tmp_path):
    chosen = select(tmp_path, {
        "core/__init__.py": "",
        "core/common.py": LAYER,
        "core/yolov4.py": "import core.common as common\ndef YOLO(x):\n    return common.conv_bn(x)\n",
        "train.py": "import tensorflow as tf\nfrom core.yolov4 import YOLO\n"
                    "opt = tf.keras.optimizers.Adam()\nopt.apply_gradients([])\n",
        "core/unused.py": "import core.common as common\n",
    })
    assert chosen == {"core/common.py", "core/yolov4.py", "train.py"}


def test_a_flag_dispatch_script_links_through_a_model_that_calls_a_wrapper(tmp_path):
    chosen = select(tmp_path, {
        "ops.py": LAYER.replace("conv_bn", "batch_normal"),
        "vaegan.py": "from ops import batch_normal\ndef build(x):\n    return batch_normal(x)\n",
        "main.py": "import tensorflow as tf\nfrom vaegan import build\n"
                   "tf.app.flags.DEFINE_integer('op', 0, 'train or test')\n",
        "download.py": "import urllib.request\n",
    })
    assert chosen == {"ops.py", "vaegan.py", "main.py"}


def test_star_imports_link_a_training_script_to_its_layers(tmp_path):
    chosen = select(tmp_path, {
        "nets.py": LAYER,
        "learner.py": "import tensorflow as tf\nfrom nets import *\n"
                      "train_op = tf.train.AdamOptimizer().minimize(conv_bn(None))\n",
    })
    assert chosen == {"nets.py", "learner.py"}


def test_a_script_that_reaches_the_layers_directly_drags_in_no_siblings(tmp_path):
    # A library's test beside its modules: it imports the layers itself, so the sibling module it
    # also imports (which merely reaches them) is not parsed for it.
    chosen = select(tmp_path, {
        "lib/__init__.py": "",
        "lib/layers/normalization.py": LAYER,
        "lib/optimizers/nadam.py": "from lib.layers import normalization\n",
        "lib/optimizers/adamax_test.py": "from lib.layers import normalization\nfrom lib.optimizers import nadam\n"
                                         "# apply_gradients\n",
    })
    assert chosen == {"lib/layers/normalization.py", "lib/optimizers/adamax_test.py"}


def test_a_script_reaches_a_hand_written_batch_norm_built_on_the_tf0_op(tmp_path):
    # `tf.nn.batch_norm_with_global_normalization` is a batch-norm op: the model file calls batch norm,
    # so the dot-named training script that builds the model twice is parsed with it.
    chosen = select(tmp_path, {
        "src/model.py": "import tensorflow as tf\nclass Model:\n    def batchnorm(self, x, m, v, b, g):\n"
                        "        return tf.nn.batch_norm_with_global_normalization(x, m, v, b, g, 1e-8, False)\n",
        "src/train.paris.py": "import tensorflow as tf\nfrom model import *\nis_train = tf.placeholder(tf.bool)\n",
        "src/util.py": "import numpy as np\n",
    })
    assert chosen == {"src/model.py", "src/train.paris.py"}


def test_a_script_brings_in_the_training_module_it_imports_beside_the_layers(tmp_path):
    chosen = select(tmp_path, {
        "models.py": LAYER,
        "gan.py": "import tensorflow as tf\nclass GAN:\n    def train_step(self, x):\n"
                  "        with tf.GradientTape() as tape:\n            pass\n",
        "main.py": "from gan import GAN\nfrom models import conv_bn\nGAN().fit(conv_bn(None))\n",
        "download.py": "import urllib.request\n",
        "plots.py": "import matplotlib\n",
    })
    assert chosen == {"models.py", "gan.py", "main.py"}
