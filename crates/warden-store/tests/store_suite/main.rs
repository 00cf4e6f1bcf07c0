//! The store contract, run against every backend.
//!
//! Each test in [`tasks`], [`audit`], [`approvals`], [`counters`] and
//! [`shared`] is a function over a [`Harness`]; [`suite!`] runs each of
//! them once on a new SQLite file and once on a new PostgreSQL database.
//! Without `WARDEN_TEST_POSTGRES_URL` the PostgreSQL runs print
//! `skipped: WARDEN_TEST_POSTGRES_URL unset` and pass.

mod approvals;
mod audit;
mod counters;
mod fixtures;
mod harness;
mod shared;
mod tasks;

use harness::Harness;

/// Defines one test per listed function in a module per backend.
macro_rules! suite {
    ($($module:ident :: $test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(mut harness) = super::Harness::sqlite().await else {
                        return;
                    };
                    super::$module::$test(&mut harness).await;
                    harness.finish().await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(mut harness) = super::Harness::postgres().await else {
                        return;
                    };
                    super::$module::$test(&mut harness).await;
                    harness.finish().await;
                }
            )*
        }
    };
}

suite! {
    tasks::task_round_trip,
    tasks::task_unknown_id_is_none,
    tasks::insert_task_rejects_duplicate_id,
    tasks::insert_task_rejects_unknown_parent,
    tasks::insert_task_rejects_revoked_parent,
    tasks::revoke_cascades_to_descendants_only,
    tasks::revoke_skips_tasks_already_revoked,
    tasks::revoke_unknown_task_returns_empty,
    tasks::tasks_list_newest_first,
    tasks::task_text_round_trips_exactly,
    tasks::concurrent_delegation_and_revocation_leave_no_live_child,
    tasks::task_with_nul_kept_or_rejected,
    audit::append_flush_trace_in_order,
    audit::trace_unknown_id_is_empty,
    audit::concurrent_appends_chain_without_gaps,
    audit::audit_range_pages_chain_together,
    audit::chain_detects_edited_record,
    audit::chain_detects_deleted_record,
    audit::chain_detects_reordered_records,
    audit::reopen_continues_chain,
    audit::traces_summary_counts_denials,
    audit::audit_head_is_newest_record,
    audit::close_stops_writer,
    audit::deep_detail_is_replaced,
    audit::nul_in_text_keeps_chain_valid,
    approvals::approval_round_trip_every_field,
    approvals::insert_approval_rejects_duplicate_id,
    approvals::insert_approval_rejects_hash_of_other_arguments,
    approvals::approval_reads_expired_after_expiry,
    approvals::approvals_filter_by_effective_status,
    approvals::find_approval_matches_exact_call_only,
    approvals::find_approval_keeps_denial_after_expiry,
    approvals::decide_twice_conflicts_with_approved,
    approvals::decide_unknown_id_not_found,
    approvals::consume_succeeds_once,
    approvals::consume_rejects_pending_denied_expired,
    counters::checkpoints_round_trip_in_seq_order,
    counters::insert_checkpoint_keeps_first_of_same_seq,
    counters::insert_checkpoint_rejects_unknown_seq_and_wrong_hash,
    counters::add_counters_start_at_zero_and_return_scope,
    counters::add_counters_applies_repeated_name_twice,
    counters::add_counters_keeps_scopes_apart,
    counters::tool_pins_round_trip_and_replace,
    counters::add_counters_saturates_at_i64_bounds,
    shared::task_from_one_store_usable_on_other,
    shared::revocation_reaches_other_store,
    shared::approval_decision_reaches_other_store,
    shared::concurrent_decisions_across_stores_one_wins,
    shared::concurrent_consumes_across_stores_succeed_once,
    shared::identical_calls_across_stores_share_one_request,
    shared::counters_across_stores_lose_nothing,
    shared::appends_from_two_stores_form_one_chain,
    shared::read_only_store_reads_and_rejects_writes,
}
