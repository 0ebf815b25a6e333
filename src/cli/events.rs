//! `events show|list|replay|drop` and `outbox`: the admin API's client commands, each one
//! bounded exchange whose answer is printed as text or, with `--json`, as sent.

use std::process::ExitCode;

use bytes::Bytes;

use super::tools::from_env;
use super::{AdminArgs, EventsCommand, StateFilter, emit, failure, runtime, usage};
use crate::admin_client::{self, Action, AdminClient, ClientError, HttpUrl, ListFilter};
use crate::config::Secret;

pub(super) fn events(command: EventsCommand) -> ExitCode {
    match command {
        EventsCommand::Show {
            id,
            environment,
            body,
            admin,
        } => admin_call(&admin, |client| async move {
            let reply = client.show(&id, environment.as_deref(), body).await?;
            Ok((reply.raw, admin_client::format_event(&reply.value)))
        }),
        EventsCommand::List {
            state,
            event_type,
            since,
            limit,
            before,
            admin,
        } => {
            let filter = ListFilter {
                state: state.map(|s| match s {
                    StateFilter::Pending => "pending",
                    StateFilter::Published => "published",
                    StateFilter::Parked => "parked",
                    StateFilter::Dropped => "dropped",
                }),
                event_type,
                since_ms: since,
                limit,
                before,
            };
            admin_call(&admin, |client| async move {
                let reply = client.list(&filter).await?;
                Ok((reply.raw, admin_client::format_page(&reply.value)))
            })
        }
        EventsCommand::Replay {
            id,
            environment,
            admin,
        } => act(&admin, Action::Replay, id, environment),
        EventsCommand::Drop {
            id,
            environment,
            admin,
        } => act(&admin, Action::Drop, id, environment),
    }
}

fn act(admin: &AdminArgs, action: Action, id: String, environment: Option<String>) -> ExitCode {
    admin_call(admin, |client| async move {
        let reply = client.act(action, &id, environment.as_deref()).await?;
        Ok((reply.raw, admin_client::format_replayed(&reply.value)))
    })
}

/// Runs one admin API call; prints its raw JSON (`--json`) or its text, and maps errors to exit
/// codes.
pub(super) fn admin_call<F, Fut>(args: &AdminArgs, call: F) -> ExitCode
where
    F: FnOnce(AdminClient) -> Fut,
    Fut: Future<Output = Result<(Bytes, String), ClientError>>,
{
    let url = match HttpUrl::parse(&args.url) {
        Ok(u) => u,
        Err(e) => return usage(&format!("--admin {e}")),
    };
    let token = match &args.token_env {
        Some(name) => match from_env("--token-env", name) {
            Ok(t) => Some(Secret::new(t)),
            Err(message) => return usage(&message),
        },
        None => None,
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(call(AdminClient::new(url, token))) {
        Ok((raw, text)) => {
            if args.json {
                let mut raw = String::from_utf8_lossy(&raw).into_owned();
                if !raw.ends_with('\n') {
                    raw.push('\n');
                }
                emit(&raw);
            } else {
                emit(&text);
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.is_usage() => usage(&e.to_string()),
        Err(e) => failure(&e.to_string()),
    }
}
