"""``python -m rok_operator``: run the operator until SIGTERM."""

from rok_operator.main import main

main()
