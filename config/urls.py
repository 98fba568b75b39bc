from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core import health
from nudges.views import MeView
from patients.views import with_erasure
from privacy.enrolment_api import EnrolmentView

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    # GET and PATCH of the patient's own resource (nudges) plus DELETE: erasure (patients).
    path("api/v1/me/", with_erasure(MeView).as_view(), name="me-erase"),
    path("api/v1/", include("nudges.urls")),
    path("api/v1/", include("patients.urls")),
    path("api/v1/enrollments/", EnrolmentView.as_view(), name="enrollments"),
    path("api/v1/reports/", include("privacy.urls")),  # DP reports, compliance officers only
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]

handler404 = "core.api.json_not_found"
handler500 = "core.api.json_server_error"
