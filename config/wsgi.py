import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# Everything loaded so far (Django, the apps, their modules) lives as long as the process:
# move it out of the collector's generations, so a full collection during a request does not
# walk it again (https://docs.python.org/3/library/gc.html#gc.freeze).
gc.freeze()
