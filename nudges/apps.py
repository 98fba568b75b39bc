from django.apps import AppConfig


class NudgesConfig(AppConfig):
    name = "nudges"
    verbose_name = "Nudges"

    def ready(self) -> None:
        from core.health import register_degradation_check
        from nudges.services.registry import model_health

        register_degradation_check(model_health)
