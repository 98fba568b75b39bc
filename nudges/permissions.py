from rest_framework.permissions import BasePermission


class IsPatient(BasePermission):
    """Only a patient's own app token may use the patient API."""

    message = "This API is for patients' app tokens."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and hasattr(user, "patient"))
