from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "patients"
    verbose_name = "Patients"

    def ready(self) -> None:
        # Refuse to start with missing or malformed master keys (ImproperlyConfigured naming
        # the setting) rather than fail on the first patient read; a well-formed key that is
        # not the one the data was encrypted with is caught by the database check below, and
        # in any case fails GCM's authentication instead of reading garbage.
        from patients import checks
        from privacy import crypto

        crypto.master_keys()
        checks.register()
