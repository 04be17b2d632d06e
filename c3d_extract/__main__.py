"""``python -m c3d_extract`` runs ``c3d-extract``."""

from c3d_extract.cli.extract import main

if __name__ == "__main__":
    main()
