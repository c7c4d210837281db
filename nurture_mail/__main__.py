"""`python -m nurture_mail` = the `nurture` command."""

from .cli import main

if __name__ == "__main__":
    main()
