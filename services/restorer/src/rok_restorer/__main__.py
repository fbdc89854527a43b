"""``python -m rok_restorer``: run the restorer until SIGTERM."""

from rok_restorer.main import main

main()
