"""``python -m mailslot``: the same as the ``mailslot`` command."""

from mailslot.cli.main import main

if __name__ == "__main__":
    main()
