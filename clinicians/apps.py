from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CliniciansConfig(AppConfig):
    name = "clinicians"
    verbose_name = "Clinical governance and review"

    def ready(self) -> None:
        post_migrate.connect(_sync_roles, sender=self)


def _sync_roles(**kwargs) -> None:
    """Roles are configuration: kept in step with clinicians.roles after every migrate."""
    from clinicians.roles import roles_sync

    roles_sync()
