from django.contrib import admin

from clinicians.models import Clinician


@admin.register(Clinician)
class ClinicianAdmin(admin.ModelAdmin):
    list_display = ["user"]
    filter_horizontal = ["groups"]
    search_fields = ["user__username"]
