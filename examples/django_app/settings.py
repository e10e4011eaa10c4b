"""All the settings of the Django example, in one file.

The database is `CBUS_DSN` (a libpq DSN: `cbus dev` prints one), on Django's
PostgreSQL backend, which runs on psycopg 3 when it is installed (cbus needs it).

    export CBUS_DSN=postgresql://postgres@127.0.0.1:54329/postgres
    export DJANGO_SETTINGS_MODULE=examples.django_app.settings PYTHONPATH=generated:.
    python -m django migrate --run-syncdb
    python -m django runserver
    cbus worker examples.django_app.handlers:make
"""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ.get("CBUS_DSN", ""))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
ROOT_URLCONF = "examples.django_app.views"
INSTALLED_APPS = ["examples.django_app"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", "postgres"),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
    }
}
