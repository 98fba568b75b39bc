from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PrivacyConfig(AppConfig):
    name = "privacy"
    verbose_name = "Privacy"


def _permissions_before_roles(sender, using="default", apps=None, **kwargs):
    """The role sync (clinicians.roles, run when the clinicians app has been migrated or
    flushed) grants the compliance role permissions of this app, which is listed after
    clinicians: Django would create them only later. Create them just before."""
    if sender.label != "clinicians":
        return
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    create_permissions(
        global_apps.get_app_config("privacy"), verbosity=0, using=using, apps=apps or global_apps
    )


# Connected when Django imports this module, which it does for every app before calling any
# app's ready(): so this receiver runs before those connected there (the role sync among them).
post_migrate.connect(_permissions_before_roles, dispatch_uid="privacy.permissions_before_roles")
