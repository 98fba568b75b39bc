from django.contrib import admin

from safety.models import MedicalGroup


@admin.register(MedicalGroup)
class MedicalGroupAdmin(admin.ModelAdmin):
    list_display = ["slug", "name"]
    search_fields = ["slug", "name"]
