from django.urls import path

from patients import views

urlpatterns = [
    path("me/consent/", views.ConsentView.as_view(), name="me-consent"),
    path("me/export/", views.ExportView.as_view(), name="me-export"),
]
