"""The staff roles, as Django groups with model permissions. Object-level grants (which
medical groups a clinician covers) are separate (clinicians.access)."""

from django.contrib.auth.models import Group, Permission

CLINICIAN = "clinician"
SAFETY_LEAD = "safety-lead"
COMPLIANCE = "compliance"
INTEGRATION = "integration"

ROLE_PERMISSIONS: dict[str, list[str]] = {
    # Clinicians work the review queue and sign templates off or stop them.
    CLINICIAN: [
        "nudges.view_reviewrequest",
        "clinicians.add_reviewdecision",
        "clinicians.view_reviewdecision",
        "nudges.view_template",
        "nudges.change_template",
    ],
    # Safety leads edit rules in draft rule sets, propose them and sign others' off. They do
    # not review nudges.
    SAFETY_LEAD: [
        "safety.view_medicalgroup",
        "safety.view_ruleset",
        "safety.add_ruleset",
        "safety.change_ruleset",
        "safety.view_rule",
        "safety.add_rule",
        "safety.change_rule",
        "safety.delete_rule",
        "safety.view_rulerevision",
        "nudges.view_template",
        "nudges.change_template",
    ],
    # Compliance officers preview, release and export the differentially private reports and
    # read the privacy-budget ledger (privacy.access checks the role itself); no raw data.
    COMPLIANCE: [
        "privacy.view_release",
        "privacy.add_release",
        "privacy.view_privacybudget",
    ],
    # The clinic's system: enrols patients through the API (privacy/enrolment_api.py).
    INTEGRATION: ["patients.enrol_patient"],
}


def roles_sync() -> None:
    """Create the role groups and give each exactly its permissions (idempotent)."""
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        permissions = []
        for name in names:
            app_label, codename = name.split(".")
            permissions.append(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        group.permissions.set(permissions)
