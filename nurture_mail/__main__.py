"""`python -m nurture_mail` = the `nurture` command."""

from .cli import main

main()
