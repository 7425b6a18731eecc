"""``python -m landscape_cli`` and the ``landscape`` console script."""

from landscape_cli.commands import main

if __name__ == "__main__":
    main()
