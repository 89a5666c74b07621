"""The program model: how arguments reach a batch norm (wrappers, dicts, arg_scope, partial, methods,
imports across files) and how names are resolved.  Each case is a small program run through the analyzer."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnaudit.source import analyze
from support import check_text, expectations, normalize


def check_files(tmp_path: Path, files: dict[str, str]) -> list[tuple[str, str, int]]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(normalize(text))
    result = analyze([tmp_path])
    return sorted((Path(f.path).resolve().relative_to(tmp_path.resolve()).as_posix(), f.code, f.line)
                  for f in result.findings)


# The train op that is run is a no_op made under the optimizer and (or not) under UPDATE_OPS.
_NO_OP_TRAIN = """
    import tensorflow as tf
    training = tf.placeholder(tf.bool)
    h = tf.layers.batch_normalization(tf.layers.dense(tf.placeholder(tf.float32, [None, 4]), 4), training=training)
    loss = tf.reduce_sum(h)
    step = tf.Variable(0.0)
    optimizer = tf.train.AdamOptimizer().minimize(loss){expect}
    with tf.control_dependencies({outer}):
        with tf.control_dependencies([optimizer, tf.assign_add(step, 1.0)]):
            train_op = tf.no_op()
    with tf.Session() as sess:
        sess.run(train_op, {{training: True}})
    """

# A wrapper whose else-branch keeps the updates in UPDATE_OPS: only the callers that take it need them run.
_WRAPPER_BRANCH = """
    import tensorflow as tf
    def batch_norm(x, is_training, in_place_update=True, name="batch_norm"):
        if in_place_update:
            return tf.contrib.layers.batch_norm(x, updates_collections=None, is_training=is_training, scope=name)
        else:
            return tf.contrib.layers.batch_norm(x, is_training=is_training, scope=name)
    x = tf.placeholder(tf.float32, [None, 4])
    h = batch_norm(x, True{args}, name="bn1")
    train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h)){expect}
    """

CASES = {
    "slim.repeat runs its block under the caller's arg_scope": """
        import sys
        import tensorflow as tf
        slim = tf.contrib.slim
        def arg_scope():
            with slim.arg_scope([slim.conv2d], normalizer_fn=slim.batch_norm,
                                normalizer_params={'updates_collections': None}) as scope:
                return scope
        def block(net, scale=1.0):
            return net + scale * slim.conv2d(net, 8, [3, 3])
        def network(x, is_training=True):
            with slim.arg_scope([slim.batch_norm], is_training=is_training):
                net = slim.repeat(x, 3, block, scale=0.2)
                return block(net)
        def train():
            with slim.arg_scope(arg_scope()):
                loss = tf.reduce_mean(network(tf.placeholder(tf.float32), is_training=True))
            train_op = tf.train.AdamOptimizer().minimize(loss)
            with tf.Session() as sess:
                sess.run(train_op)
                tf.train.Saver().save(sess, "model.ckpt")
        def evaluate():
            with slim.arg_scope(arg_scope()):
                logits = network(tf.placeholder(tf.float32), is_training=False)
            with tf.Session() as sess:
                tf.train.Saver().restore(sess, "model.ckpt")
                sess.run(logits)
        if sys.argv[1] == "train":
            train()
        else:
            evaluate()
        """,
    "the run op is a no_op under the optimizer and UPDATE_OPS": _NO_OP_TRAIN.format(
        outer="tf.get_collection(tf.GraphKeys.UPDATE_OPS)", expect=""),
    "the run op is a no_op under the optimizer alone": _NO_OP_TRAIN.format(outer="[step]",
                                                                        expect="  # expect: BN001"),
    "a wrapper's branch its callers' default does not take": _WRAPPER_BRANCH.format(args="", expect=""),
    "a wrapper's branch its caller picks": _WRAPPER_BRANCH.format(args=", in_place_update=False",
                                                                  expect="  # expect: BN001"),
    "a layer under an if on a flag set either way by an option": """
        import argparse
        import tensorflow as tf
        parser = argparse.ArgumentParser()
        parser.add_argument("--bn", default="1")
        args = parser.parse_args()
        if args.bn == "1":
            use_bn = True
        else:
            use_bn = False
        def net(x, use_bn):
            h = tf.layers.dense(x, 4)
            if use_bn:
                h = tf.contrib.layers.batch_norm(h, is_training=True)
            return h
        loss = tf.reduce_sum(net(tf.placeholder(tf.float32, [None, 4]), use_bn))
        train_op = tf.train.AdamOptimizer().minimize(loss)  # expect: BN001
        """,
    "slim blocks built in a loop within one entry of their scope": """
        import tensorflow as tf
        slim = tf.contrib.slim
        def block(net):
            return slim.conv2d(net, 8, [3, 3], normalizer_fn=slim.batch_norm)
        def network(x):
            with tf.variable_scope('net'):
                net = block(x)
                for _ in range(3):
                    net = block(net)
                return net
        loss = tf.reduce_mean(network(tf.placeholder(tf.float32)))
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            train_op = tf.train.AdamOptimizer().minimize(loss)
        """,
    "slim blocks built again in a second entry of their scope": """
        import tensorflow as tf
        slim = tf.contrib.slim
        def network(x, is_training):
            with tf.variable_scope('net'):
                return slim.conv2d(x, 8, [3, 3], normalizer_fn=slim.batch_norm,
                                   normalizer_params={'is_training': is_training})
        x = tf.placeholder(tf.float32)
        train_out = network(x, True)
        eval_out = network(x, False)  # expect: BN002
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            train_op = tf.train.AdamOptimizer().minimize(tf.reduce_mean(train_out))
        """,
    "wrapper passes a Python flag": """
        import tensorflow as tf
        def bn(x, is_training):
            return tf.contrib.layers.batch_norm(x, is_training=is_training, updates_collections=None)
        x = tf.placeholder(tf.float32, [None, 4])
        y = bn(x, True)
        if y is None:
            pass
        """,
    "in-place updates through a params dict passed along": """
        import tensorflow as tf
        slim = tf.contrib.slim
        def net(x, params):
            return slim.conv2d(x, 8, [3, 3], normalizer_fn=slim.batch_norm, normalizer_params=params)
        bn_params = {'is_training': True, 'decay': 0.9, 'updates_collections': None}
        x = tf.placeholder(tf.float32, [None, 8, 8, 3])
        loss = tf.reduce_mean(net(x, bn_params))
        train_op = tf.train.AdamOptimizer().minimize(loss)
        """,
    "collection updates through a params dict passed along": """
        import tensorflow as tf
        slim = tf.contrib.slim
        def net(x, params):
            return slim.conv2d(x, 8, [3, 3], normalizer_fn=slim.batch_norm, normalizer_params=params)
        bn_params = {'is_training': True, 'decay': 0.9}
        x = tf.placeholder(tf.float32, [None, 8, 8, 3])
        loss = tf.reduce_mean(net(x, bn_params))
        train_op = tf.train.AdamOptimizer().minimize(loss)  # expect: BN001
        """,
    "arg_scope around the call of the model function": """
        import tensorflow as tf
        slim = tf.contrib.slim
        def net(x):
            return slim.batch_norm(x)
        x = tf.placeholder(tf.float32, [None, 4])
        with slim.arg_scope([slim.batch_norm], updates_collections=None, decay=0.9):
            y = net(x)
        train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(y))
        """,
    "partial with updates in place": """
        import functools
        import tensorflow as tf
        bn = functools.partial(tf.contrib.layers.batch_norm, updates_collections=None, decay=0.9)
        x = tf.placeholder(tf.float32, [None, 4])
        train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(bn(x)))
        """,
    "method on self with a Python flag": """
        import tensorflow as tf
        class Model:
            def __init__(self):
                self.is_training = True
            def build(self, x):
                if self.is_training:
                    return tf.contrib.layers.batch_norm(x, is_training=True, updates_collections=None)
                return x
        x = tf.placeholder(tf.float32, [None, 4])
        y = Model().build(x)
        """,
    "method on self with a placeholder flag": """
        import tensorflow as tf
        class Model:
            def __init__(self):
                self.is_training = tf.placeholder(tf.bool, [])
            def build(self, x):
                if self.is_training:  # expect: BN007
                    return tf.contrib.layers.batch_norm(x, is_training=True, updates_collections=None)
                return x
        x = tf.placeholder(tf.float32, [None, 4])
        y = Model().build(x)
        """,
    "trainable plus model variables with contrib": """
        import tensorflow as tf
        x = tf.placeholder(tf.float32, [None, 4])
        h = tf.contrib.layers.batch_norm(x, updates_collections=None)
        saver = tf.train.Saver(tf.trainable_variables() + tf.model_variables())
        """,
    # tf.layers does not register its moving statistics as model variables.
    "trainable plus model variables with tf.layers": """
        import tensorflow as tf
        x = tf.placeholder(tf.float32, [None, 4])
        h = tf.layers.batch_normalization(x, training=True)
        saver = tf.train.Saver(tf.trainable_variables() + tf.model_variables())  # expect: BN004
        """,
    "tf.group of the train op and the updates": """
        import tensorflow as tf
        x = tf.placeholder(tf.float32, [None, 4])
        h = tf.contrib.layers.batch_norm(x)
        train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        train_op = tf.group(train_op, *update_ops)
        """,
    "with_dependencies on a loss that is fetched": """
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_ops
        x = tf.placeholder(tf.float32, [None, 4])
        h = tf.contrib.layers.batch_norm(x)
        loss = tf.reduce_sum(h)
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        if update_ops:
            updates = tf.tuple(update_ops)
            loss = control_flow_ops.with_dependencies(updates, loss)
        train_op = tf.train.AdamOptimizer().minimize(loss)
        with tf.Session() as sess:
            _, loss_value = sess.run([train_op, loss])
        """,
    # Gradients start from ones of the loss's static shape, so the joined loss never runs.
    "with_dependencies on a loss that is never fetched": """
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_ops
        x = tf.placeholder(tf.float32, [None, 4])
        h = tf.contrib.layers.batch_norm(x)
        loss = tf.reduce_sum(h)
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        if update_ops:
            updates = tf.tuple(update_ops)
            loss = control_flow_ops.with_dependencies(updates, loss)
        train_op = tf.train.AdamOptimizer().minimize(loss)  # expect: BN001
        with tf.Session() as sess:
            sess.run(train_op)
        """,
    "slim create_train_op": """
        import tensorflow as tf
        slim = tf.contrib.slim
        x = tf.placeholder(tf.float32, [None, 4])
        h = slim.batch_norm(x)
        train_op = slim.learning.create_train_op(tf.reduce_sum(h), tf.train.AdamOptimizer())
        """,
    "tensorpack star import": """
        from tensorpack import *
        import tensorflow as tf
        x = tf.placeholder(tf.float32, [None, 4])
        y = BatchNorm('bn', x, momentum=1.5)  # expect: BN005
        """,
    "keras 2 positional training flag": """
        import tensorflow as tf
        model = tf.keras.Sequential([tf.keras.layers.Dense(4), tf.keras.layers.BatchNormalization()])
        opt = tf.keras.optimizers.SGD()
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(x, True))
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        """,
    "keras fine-tuning with frozen batch norm": """
        import keras
        import tensorflow as tf
        base = keras.applications.ResNet50(weights=None)
        opt = keras.optimizers.SGD()
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(base(x, training=False))
            opt.apply_gradients(zip(tape.gradient(loss, base.trainable_variables), base.trainable_variables))
        """,
    "subclassed keras model in a tape without training": """
        import keras
        import tensorflow as tf
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.bn = keras.layers.BatchNormalization()
            def call(self, x, training=None):
                return self.bn(x, training=training)
        net = Net()
        opt = keras.optimizers.SGD()
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(net(x))  # expect: BN006
            opt.apply_gradients(zip(tape.gradient(loss, net.trainable_variables), net.trainable_variables))
        """,
    "gradient tape for saliency, not training": """
        import keras
        import tensorflow as tf
        model = keras.Sequential([keras.layers.Dense(4), keras.layers.BatchNormalization()])
        def saliency(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = model(x)
            return tape.gradient(y, x)
        """,
    "decay with an unknown step count": """
        import sys
        import tensorflow as tf
        x = tf.placeholder(tf.float32, [None, 4])
        h = tf.contrib.layers.batch_norm(x, updates_collections=None)
        train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
        with tf.Session() as sess:
            for step in range(int(sys.argv[1])):
                sess.run(train_op)
        """,
    "nested loops multiply": """
        import tensorflow as tf
        x = tf.placeholder(tf.float32, [None, 4])
        h = tf.contrib.layers.batch_norm(x, decay=0.99, updates_collections=None)  # expect: BN009
        train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(h))
        with tf.Session() as sess:
            for epoch in range(10):
                for step in range(10):
                    sess.run(train_op)
        """,
    "cond over non batch-norm ops": """
        import tensorflow as tf
        flag = tf.placeholder(tf.bool, [])
        x = tf.placeholder(tf.float32, [None, 4])
        h = tf.contrib.layers.batch_norm(x, is_training=flag, updates_collections=None)
        y = tf.cond(flag, lambda: tf.nn.dropout(h, 0.5), lambda: h)
        """,
    "cond between two layers inside the branches that share variables": """
        import tensorflow as tf
        from tensorflow.contrib.layers import batch_norm
        def BatchNorm(inputT, is_training=True, scope=None):
            return tf.cond(is_training,  # expect: BN008
                lambda: batch_norm(inputT, is_training=True, updates_collections=None, scope=scope),
                lambda: batch_norm(inputT, is_training=False, updates_collections=None, scope=scope, reuse=True))
        x = tf.placeholder(tf.float32, [None, 4])
        flag = tf.placeholder(tf.bool, [])
        y = BatchNorm(x, flag, scope='bn')
        """,
    "layers reached by attribute on a mapping built from (name, layer) pairs": """
        import tensorflow as tf
        from bunch import Bunch
        class batch_norm(object):
            def __init__(self, name):
                self.name = name
            def __call__(self, x, train=True):
                return tf.contrib.layers.batch_norm(x, is_training=train, updates_collections=None, scope=self.name)
        class GAN(object):
            def __init__(self):
                self.bns = Bunch([("g_bn%i" % i, batch_norm(name="g_bn%i" % i)) for i in range(2)])
                self.z = tf.placeholder(tf.float32, [None, 4])
                with tf.variable_scope("gen"):
                    out = self.bns.g_bn0(self.z)
                train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(out))
                with tf.variable_scope("gen", reuse=True):
                    self.sampler = self.bns.g_bn0(self.z)  # expect: BN011
            def sample(self, sess):
                return sess.run(self.sampler)
        """,
    "set_learning_phase(1) before export": """
        import tensorflow as tf
        tf.keras.backend.set_learning_phase(1)  # expect: BN011
        model = tf.keras.Sequential([tf.keras.layers.Dense(4), tf.keras.layers.BatchNormalization()])
        model.save('exported')
        """,
    "serving signature calls the model in training mode": """
        import tensorflow as tf
        import keras
        model = keras.Sequential([keras.layers.Dense(4), keras.layers.BatchNormalization()])
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(x):
            return model(x, training=True)  # expect: BN011
        tf.saved_model.save(model, 'export', signatures={'serving_default': serve})
        """,
}


@pytest.mark.parametrize("name", CASES)
def test_case(name, tmp_path):
    text = normalize(CASES[name])
    assert check_text(tmp_path, text) == expectations(text)


def test_layer_in_a_package_module_and_train_op_in_a_script(tmp_path):
    found = check_files(tmp_path, {
        "nets/__init__.py": "",
        "nets/resnet.py": """
            import tensorflow as tf
            from . import blocks
            def resnet(x, is_training):
                return blocks.conv_bn(x, is_training)
            """,
        "nets/blocks.py": """
            import tensorflow as tf
            def conv_bn(x, is_training):
                return tf.layers.batch_normalization(x, training=is_training, name='bn1')
            """,
        "train.py": """
            import tensorflow as tf
            from nets.resnet import resnet
            x = tf.placeholder(tf.float32, [None, 4])
            loss = tf.reduce_mean(resnet(x, True))
            train_op = tf.train.AdamOptimizer().minimize(loss)
            saver = tf.train.Saver(tf.trainable_variables())
            """,
    })
    assert found == [("train.py", "BN001", 5), ("train.py", "BN004", 6)]


def test_unrelated_train_op_in_another_script_is_not_blamed(tmp_path):
    found = check_files(tmp_path, {
        "model.py": """
            import tensorflow as tf
            def build(x):
                return tf.layers.batch_normalization(x, training=True)
            """,
        "other_experiment.py": """
            import tensorflow as tf
            x = tf.placeholder(tf.float32, [None, 4])
            train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(tf.layers.dense(x, 1)))
            """,
    })
    assert found == []


def test_imports_resolve_from_the_importing_script_directory(tmp_path):
    # Two tutorials side by side, each with its own model.py: `import model` in a/ is a/model.py.
    found = check_files(tmp_path, {
        "a/model.py": """
            import tensorflow as tf
            def build(x):
                return tf.contrib.layers.batch_norm(x, updates_collections=None)
            """,
        "a/train.py": """
            import tensorflow as tf
            import model
            x = tf.placeholder(tf.float32, [None, 4])
            train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(model.build(x)))
            """,
        "b/model.py": """
            import tensorflow as tf
            def build(x):
                return tf.contrib.layers.batch_norm(x)
            """,
        "b/train.py": """
            import tensorflow as tf
            from model import build
            x = tf.placeholder(tf.float32, [None, 4])
            train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(build(x)))
            """,
    })
    assert found == [("b/train.py", "BN001", 4)]


def test_an_unparsed_sibling_module_shadows_a_same_named_one_elsewhere(tmp_path):
    # a/model.py mentions no batch norm (never parsed), yet it is what `import model` loads in a/.
    found = check_files(tmp_path, {
        "a/model.py": """
            import tensorflow as tf
            def build(x):
                return tf.layers.dense(x, 1)
            """,
        "a/train.py": """
            import tensorflow as tf
            import model
            x = tf.placeholder(tf.float32, [None, 4])
            train_op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(model.build(x)))
            """,
        "model.py": """
            import tensorflow as tf
            def build(x):
                return tf.contrib.layers.batch_norm(x)
            """,
    })
    assert found == []


def test_flag_dispatch_script_sees_the_test_execution_through_a_model_library(tmp_path):
    # main.py mentions no batch norm, no train op: only a flag that picks train() or test().  The
    # model file calls a wrapper (no batch-norm call of its own), the wrapper calls the layer; the
    # test branch restores and runs the model built in training mode.
    found = check_files(tmp_path, {
        "ops.py": """
            import tensorflow as tf
            def batch_normal(x, scope):
                return tf.contrib.layers.batch_norm(x, updates_collections=None, scope=scope)
            """,
        "vaegan.py": """
            import tensorflow as tf
            from ops import batch_normal
            class VAEGAN(object):
                def build(self):
                    self.x = tf.placeholder(tf.float32, [None, 4])
                    self.out = batch_normal(tf.layers.dense(self.x, 4), scope='bn1')
                    self.saver = tf.train.Saver()
                def train(self):
                    op = tf.train.AdamOptimizer().minimize(tf.reduce_sum(self.out))
                    with tf.Session() as sess:
                        sess.run(op)
                        self.saver.save(sess, 'model.ckpt')
                def test(self):
                    with tf.Session() as sess:
                        self.saver.restore(sess, 'model.ckpt')
                        sess.run(self.out)
            """,
        "main.py": """
            import tensorflow as tf
            from vaegan import VAEGAN
            tf.app.flags.DEFINE_integer('op', 0, 'train (0) or test')
            FLAGS = tf.app.flags.FLAGS
            if __name__ == '__main__':
                model = VAEGAN()
                if FLAGS.op == 0:
                    model.build()
                    model.train()
                else:
                    model.build()
                    model.test()
            """,
    })
    assert found == [("main.py", "BN011", 11)]


def test_layer_files_between_a_script_and_the_layers_need_mention_nothing(tmp_path):
    # train.py -> core/yolov4.py (no batch norm, nothing related) -> core/common.py (the layer).
    found = check_files(tmp_path, {
        "core/__init__.py": "",
        "core/common.py": """
            import tensorflow as tf
            class BatchNormalization(tf.keras.layers.BatchNormalization):
                pass
            def convolutional(x):
                return BatchNormalization()(tf.keras.layers.Conv2D(4, 3)(x))
            """,
        "core/yolov4.py": """
            import core.common as common
            def YOLO(x):
                return common.convolutional(x)
            """,
        "train.py": """
            import tensorflow as tf
            from core.yolov4 import YOLO
            inputs = tf.keras.layers.Input([8, 8, 3])
            model = tf.keras.Model(inputs, YOLO(inputs))
            optimizer = tf.keras.optimizers.Adam()
            def train_step(image):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(model(image, training=True))
                gradients = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            def test_step(image):
                return model(image, training=True)
            for image in []:
                train_step(image)
                test_step(image)
            """,
    })
    assert found == [("train.py", "BN011", 12)]



def test_a_class_whose_attribute_holds_an_object_of_itself_is_asked_once(tmp_path):
    # `self._value = tf.Variable(value)` inside a backend package named `tensorflow` (keras 3's own
    # sources) holds an object of the class itself: asking whether the class builds batch norm must
    # not recurse for ever (it was a RecursionError, and BN006 went missing on keras's sources).
    from bnaudit.source import semantics as S
    from bnaudit.source import values as V
    from bnaudit.source.engine import _extract_job
    from bnaudit.source.program import Program

    source = normalize("""
        import tensorflow as tf
        class Node(tf.keras.layers.Layer):
            def __init__(self, depth=2):
                super().__init__()
                self.child = Node(depth - 1)
        class Tree(tf.keras.layers.Layer):
            def __init__(self):
                super().__init__()
                self.root = Node()
                self.norm = tf.keras.layers.BatchNormalization()
        """)
    path = tmp_path / "node.py"
    path.write_text(source)
    program = Program([_extract_job((str(path), source.encode(), "node", False))], [str(path)])
    assert S.class_builds_batch_norm(program, V.FunctionRef(str(path), "Node")) is False
    assert S.class_builds_batch_norm(program, V.FunctionRef(str(path), "Tree")) is True


def test_entries_related_by_index_are_those_related_pair_by_pair(tmp_path):
    # `Executions.near` finds the entries related to one from indices (reaches, reached by, imports,
    # one class); it must agree with `related_entries` asked pair by pair.
    import itertools

    from bnaudit.source.engine import _extract_job
    from bnaudit.source.program import Program

    files = {
        "model.py": """
            import tensorflow as tf
            def net(x):
                return tf.layers.batch_normalization(x, training=True)
            class Trainer:
                def train(self, x):
                    return tf.train.AdamOptimizer().minimize(tf.reduce_sum(net(x)))
                def evaluate(self, x):
                    return net(x)
            """,
        "train.py": """
            import tensorflow as tf
            from model import net
            def main(_):
                x = tf.placeholder(tf.float32, [None, 4])
                tf.train.AdamOptimizer().minimize(tf.reduce_sum(net(x)))
            tf.app.run(main)
            """,
        "other.py": """
            import tensorflow as tf
            def unrelated(x):
                return tf.layers.batch_normalization(x, training=False)
            """,
    }
    modules = []
    for name, text in files.items():
        path = tmp_path / name
        source = normalize(text)
        path.write_text(source)
        modules.append(_extract_job((str(path), source.encode(), name[:-3], False)))
    program = Program(modules, [str(tmp_path / name) for name in files])
    executions = program.executions
    entries = {(id(module), scope) for module in modules for scope in ("", *module.functions)}
    related = [(a, b) for a, b in itertools.product(entries, entries) if executions.related_entries(a, b)]
    assert len(related) > len(entries)   # some pairs of different entries are related
    for a, b in itertools.product(entries, entries):
        assert executions.related_entries(a, b) == (b in executions._related_to(a)), (a, b)


def test_a_training_step_in_a_module_the_script_imports_beside_the_layers(tmp_path):
    """`main.py` imports the networks from `models.py` and the GAN whose `train_step` runs them from
    `gan.py`; `gan.py` imports neither, and the fault is there (nihermann/Pokemaenner's DCGAN)."""
    found = check_files(tmp_path, {
        "models.py": """
            from tensorflow import keras
            def load_models():
                discriminator = keras.Sequential([keras.layers.Dense(1)])
                generator = keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization()])
                return discriminator, generator
            """,
        "gan.py": """
            import tensorflow as tf
            from tensorflow import keras
            class GAN(keras.Model):
                def __init__(self, discriminator, generator):
                    super().__init__()
                    self.discriminator = discriminator
                    self.generator = generator
                def train_step(self, noise):
                    with tf.GradientTape() as tape:
                        loss = tf.reduce_mean(self.discriminator(self.generator(noise)))
                    grads = tape.gradient(loss, self.generator.trainable_weights)
                    self.optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
                    return {"loss": loss}
            """,
        "main.py": """
            from gan import GAN
            from models import load_models
            discriminator, generator = load_models()
            gan = GAN(discriminator=discriminator, generator=generator)
            gan.compile(optimizer="adam")
            gan.fit(dataset, epochs=3)
            """,
    })
    assert found == [("gan.py", "BN006", 10)]


def test_a_run_fetching_the_train_op_beside_a_large_loss_is_a_training_run(tmp_path):
    """`sess.run([self.optim, self.loss, ...])` trains, however many ops the losses fetched beside the
    train op are made of (tolstikhin/adagan: the walk through them spent its budget first, and the
    training step was taken for an inference path)."""
    from bnaudit.source.engine import _extract_job
    from bnaudit.source.program import Program

    chain = "".join(f"        h = tf.add(h, tf.reduce_mean(h) * {i})\n" for i in range(1200))
    source = (
        "import tensorflow as tf\n"
        "class Model:\n"
        "    def build(self):\n"
        "        self.is_training = tf.placeholder(tf.bool)\n"
        "        h = tf.contrib.layers.batch_norm(tf.placeholder(tf.float32), is_training=self.is_training)\n"
        f"{chain}"
        "        self.loss = tf.reduce_mean(h)\n"
        "        self.optim = tf.train.AdamOptimizer().minimize(self.loss)\n"
        "    def train(self, sess):\n"
        "        sess.run([self.optim, self.loss, self.loss], {self.is_training: True})\n")
    path = tmp_path / "model.py"
    path.write_text(source)
    program = Program([_extract_job((str(path), source.encode(), "model", False))], [str(path)])
    (run,) = program.dataflow.runs
    assert program.dataflow.runs_train_op(run)
