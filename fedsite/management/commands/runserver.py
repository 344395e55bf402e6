"""`runserver`: daphne's development server (HTTP and websockets through fedsite.asgi).

daphne's own app provides this command, but listing 'daphne' in INSTALLED_APPS imports Twisted,
autobahn and cryptography into every process that sets Django up: nodes and Celery workers paid
about 26 MB each for a server they never run. The `fedsite` app, first in INSTALLED_APPS, provides
the same command instead, and daphne (which installs its reactor when imported) loads only here.
"""
from daphne.management.commands.runserver import Command as DaphneRunserverCommand


class Command(DaphneRunserverCommand):
    pass
