from bnaudit.cli import console

console()
