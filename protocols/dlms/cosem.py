"""COSEM interface classes used by GBCS (Blue Book names), for the names in the JSON form.

One table: class id -> (name, attribute names by id, method names by id). Attribute 1 is always
`logical_name`. GBCS-specific objects are named per (class, OBIS, attribute) from the use-case appendix
(`protocols.gbcs.registry_data` carries those), this table only knows the classes.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CosemClass", "COSEM_CLASSES", "class_name", "attribute_name", "method_name"]


@dataclass(frozen=True, slots=True)
class CosemClass:
    class_id: int
    name: str
    attributes: tuple[str, ...]   # attribute 1.. in order
    methods: tuple[str, ...] = ()  # method 1.. in order


COSEM_CLASSES: dict[int, CosemClass] = {c.class_id: c for c in (
    CosemClass(1, "Data", ("logical_name", "value")),
    CosemClass(3, "Register", ("logical_name", "value", "scaler_unit"), ("reset",)),
    CosemClass(4, "Extended register", ("logical_name", "value", "scaler_unit", "status", "capture_time"),
               ("reset",)),
    CosemClass(5, "Demand register", ("logical_name", "current_average_value", "last_average_value",
                                      "scaler_unit", "status", "capture_time", "start_time_current", "period",
                                      "number_of_periods"), ("reset", "next_period")),
    CosemClass(7, "Profile generic", ("logical_name", "buffer", "capture_objects", "capture_period",
                                      "sort_method", "sort_object", "entries_in_use", "profile_entries"),
               ("reset", "capture", "get_buffer_by_range", "get_buffer_by_index")),
    CosemClass(8, "Clock", ("logical_name", "time", "time_zone", "status", "daylight_savings_begin",
                            "daylight_savings_end", "daylight_savings_deviation", "daylight_savings_enabled",
                            "clock_base"),
               ("adjust_to_quarter", "adjust_to_measuring_period", "adjust_to_minute", "adjust_to_preset_time",
                "preset_adjusting_time", "shift_time")),
    CosemClass(9, "Script table", ("logical_name", "scripts"), ("execute",)),
    CosemClass(10, "Schedule", ("logical_name", "entries"), ("enable_disable", "insert", "delete")),
    CosemClass(11, "Special days table", ("logical_name", "entries"), ("insert", "delete")),
    CosemClass(15, "Association LN", ("logical_name", "object_list", "associated_partners_id",
                                      "application_context_name", "xDLMS_context_info",
                                      "authentication_mechanism_name", "secret", "association_status",
                                      "security_setup_reference", "user_list", "current_user")),
    CosemClass(20, "Activity calendar", ("logical_name", "calendar_name_active", "season_profile_active",
                                         "week_profile_table_active", "day_profile_table_active",
                                         "calendar_name_passive", "season_profile_passive",
                                         "week_profile_table_passive", "day_profile_table_passive",
                                         "activate_passive_calendar_time"),
               ("activate_passive_calendar",)),
    CosemClass(21, "Register monitor", ("logical_name", "thresholds", "monitored_value", "actions")),
    CosemClass(22, "Single action schedule", ("logical_name", "executed_script", "type", "execution_time")),
    CosemClass(30, "Data protection", ("logical_name", "protection_buffer", "protection_object_list",
                                       "protection_parameters_get", "protection_parameters_set",
                                       "required_protection"),
               ("get_protected_attributes", "set_protected_attributes", "invoke_protected_method")),
    CosemClass(40, "Push setup", ("logical_name", "push_object_list", "send_destination_and_method",
                                  "communication_window", "randomisation_start_interval",
                                  "number_of_retries", "repetition_delay"), ("push",)),
    CosemClass(64, "Security setup", ("logical_name", "security_policy", "security_suite",
                                      "client_system_title", "server_system_title", "certificates"),
               ("security_activate", "key_transfer", "key_agreement", "generate_key_pair",
                "generate_certificate_request", "import_certificate", "export_certificate",
                "remove_certificate")),
    CosemClass(70, "Disconnect control", ("logical_name", "output_state", "control_state", "control_mode"),
               ("remote_disconnect", "remote_reconnect")),
    CosemClass(71, "Limiter", ("logical_name", "monitored_value", "threshold_active", "threshold_normal",
                               "threshold_emergency", "min_over_threshold_duration",
                               "min_under_threshold_duration", "emergency_profile",
                               "emergency_profile_group_id_list", "emergency_profile_active", "actions")),
    CosemClass(104, "ZigBee network control", ("logical_name", "enable_disable_joining", "join_timeout",
                                               "active_devices"),
               ("register_device", "unregister_device", "unregister_all_devices", "backup_pan",
                "restore_pan", "identify_device", "remove_mirror", "update_network_key", "update_link_key",
                "create_pan", "remove_pan")),
    CosemClass(111, "Account", ("logical_name", "account_mode_and_status", "current_credit_in_use",
                                "current_credit_status", "available_credit", "amount_to_clear",
                                "clearance_threshold", "aggregated_debt", "credit_reference_list",
                                "charge_reference_list", "credit_charge_configuration",
                                "token_gateway_configuration", "account_activation_time",
                                "account_closure_time", "currency", "low_credit_threshold",
                                "next_credit_available_threshold", "max_provision",
                                "max_provision_period"),
               ("activate_account", "close_account", "reset_account")),
    CosemClass(112, "Credit", ("logical_name", "current_credit_amount", "credit_type", "priority",
                               "warning_threshold", "limit", "credit_configuration", "credit_status",
                               "preset_credit_amount", "credit_available_threshold", "period"),
               ("update_amount", "set_amount_to_value", "invoke_credit")),
    CosemClass(113, "Charge", ("logical_name", "total_amount_paid", "charge_type", "priority",
                               "unit_charge_active", "unit_charge_passive", "unit_charge_activation_time",
                               "period", "charge_configuration", "last_collection_time",
                               "last_collection_amount", "total_amount_remaining", "proportion"),
               ("update_unit_charge", "activate_passive_unit_charge", "collect", "update_total_amount_remaining",
                "set_total_amount_remaining")),
    CosemClass(115, "Token gateway", ("logical_name", "token", "token_time", "token_description",
                                      "token_delivery_method", "token_status"), ("enter",)),
    CosemClass(9000, "GBCS extended data", ("logical_name", "value_active", "scaler_unit_active",
                                            "value_passive", "scaler_unit_passive", "activate_passive_value_time"),
               ()),
)}


def class_name(class_id: int) -> str | None:
    c = COSEM_CLASSES.get(class_id)
    return c.name if c else None


def attribute_name(class_id: int, attribute_id: int) -> str | None:
    c = COSEM_CLASSES.get(class_id)
    if c is None or not 1 <= attribute_id <= len(c.attributes):
        return None
    return c.attributes[attribute_id - 1]


def method_name(class_id: int, method_id: int) -> str | None:
    c = COSEM_CLASSES.get(class_id)
    if c is None or not 1 <= method_id <= len(c.methods):
        return None
    return c.methods[method_id - 1]
