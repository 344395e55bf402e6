"""`python -m fedsite`: start the role named by RUN_AS, as the prototype's binary did.

RUN_AS=server (default): apply migrations, then serve on FL_BIND (default 0.0.0.0:5000).
RUN_AS=node: run node NODE_ID against SERVER_ADDR.
"""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fedsite.settings")
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    if settings.RUN_AS == "node":
        if not settings.NODE_ID:
            sys.exit("RUN_AS=node needs NODE_ID (for example NODE_ID=1).")
        server = ["--server", settings.SERVER_ADDR] if settings.SERVER_ADDR else []
        call_command("runnode", "--id", settings.NODE_ID, *server, *sys.argv[1:])
        return
    call_command("migrate", interactive=False, verbosity=0)
    call_command("runserver", os.environ.get("FL_BIND", "0.0.0.0:5000"), "--noreload", *sys.argv[1:])


if __name__ == "__main__":
    main()
