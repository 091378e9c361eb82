"""The authentication backend: Django's, loading a user's rater role with the user in one query."""

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group

from labeling.permissions import RATERS_GROUP, rater_membership_remember


class ModelBackendWithRole(ModelBackend):
    """Every request loads its user through ``get_user``; answering "is this a rater?" in the same query
    saves a round trip on each call a rater makes. Plain SQL: the ORM takes longer to compile this query
    than the database takes to run it."""

    def get_user(self, user_id):
        user_model = get_user_model()
        memberships = user_model.groups.through._meta.db_table
        sql = f"""
            SELECT u.*, EXISTS (
                SELECT 1 FROM {memberships} m JOIN {Group._meta.db_table} g ON g.id = m.group_id
                WHERE m.user_id = u.id AND g.name = %s
            ) AS in_raters_group
            FROM {user_model._meta.db_table} u WHERE u.id = %s
        """  # noqa: S608 (table names come from the models, values are parameters)
        try:
            user = next(iter(user_model._default_manager.raw(sql, [RATERS_GROUP, int(user_id)])), None)
        except (TypeError, ValueError):
            return None
        if user is None or not self.user_can_authenticate(user):
            return None
        # raw() sets the query's extra column as an attribute
        rater_membership_remember(user, user.in_raters_group)  # type: ignore[attr-defined]
        return user
