"""The closed vocabulary of quarantine reasons. Every dropped or unused record carries exactly one."""

from enum import StrEnum


class Reason(StrEnum):
    invalid_json = "invalid_json"
    invalid_utf8 = "invalid_utf8"
    schema_violation = "schema_violation"
    missing_provenance = "missing_provenance"
    missing_source_run_id = "missing_source_run_id"
    lifecycle = "lifecycle"
    empty_content = "empty_content"
    below_min_reward = "below_min_reward"
    category_disallowed = "category_disallowed"
    unsafe_sft_category = "unsafe_sft_category"
    unsafe_rag_category = "unsafe_rag_category"
    not_instructable = "not_instructable"
    no_assistant_turn = "no_assistant_turn"
    not_selected = "not_selected"
    after_gap = "after_gap"
    duplicate = "duplicate"
    near_duplicate = "near_duplicate"
    semantic_duplicate = "semantic_duplicate"
    contaminated = "contaminated"
    secret = "secret"
    hallucinated_file_path = "hallucinated_file_path"
    invalid_preference_pairing = "invalid_preference_pairing"
    self_pairing = "self_pairing"
    no_pair_signal = "no_pair_signal"
    unused_candidate = "unused_candidate"
    broken_tool_chain = "broken_tool_chain"
    missing_ground_truth = "missing_ground_truth"


# Valid records that simply ended in no example: the ledger closes with these, but they are not errors.
NON_ERROR_REASONS = frozenset({Reason.not_selected, Reason.unused_candidate, Reason.no_pair_signal})
