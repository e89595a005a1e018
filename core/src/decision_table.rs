//! The decision table: the decisions a policy bundle makes whatever else a request says, published
//! by the authz-sidecar at `GET /v1/policy/table` and applied by the filter without a callout
//! (docs/policy.md, "Inline decisions").
//!
//! The bundle defines the table (the default bundle's `data.behavry.authz.table`): which tools are
//! blocked on which server, and, for every enrolled agent, the name patterns it is granted per
//! server. From it follow four denials that no other fact of a request can turn into an allow in
//! that bundle: a server the agent has no grant on, a blocked tool, and a target outside the
//! agent's grants (concealed). Everything else — allows included — is decided by the sidecar,
//! and so is an agent the table does not list: it may have been enrolled since the table was
//! fetched, and a fresh enrollment must work at once. [`DecisionTable::decide`] gives the same rule ids, reasons and
//! obligations as the bundle; a test of the authz-sidecar checks that against every decision case
//! of the default bundle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::{DecisionResponse, Obligations, RequestFacts, pattern_list_matches};

/// Path of the table on the authz-sidecar.
pub const POLICY_TABLE_PATH: &str = "/v1/policy/table";

/// What the sidecar serves at [`POLICY_TABLE_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTable {
    /// Digest of the bundle (with its agents) in force: a change drops every cached decision.
    pub bundle_digest: String,
    /// The table, when the bundle defines one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<DecisionTable>,
}

/// The unconditional decisions of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionTable {
    /// Tool patterns no one may call, per server (`*`: every server).
    #[serde(default)]
    pub blocked: BTreeMap<String, Vec<String>>,
    /// Every enrolled, enabled agent: what it is granted, per server. An agent not listed is not
    /// enrolled.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentGrants>,
}

/// One agent's grants.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentGrants {
    /// Per server: the patterns granted (roles and the agent's own grants together).
    #[serde(default)]
    pub servers: BTreeMap<String, GrantPatterns>,
}

/// Name patterns granted on one server (exact, `*` or `prefix*`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantPatterns {
    /// Tools it may call.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Resources (URIs) it may read.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Prompts it may get.
    #[serde(default)]
    pub prompts: Vec<String>,
}

/// The table's denials, with the bundle's rule ids.
struct Denial {
    rule: String,
    reason: String,
    conceal: bool,
}

impl DecisionTable {
    /// The decision the table makes for `agent` asking `facts` under the bundle `digest`, or
    /// `None` when it takes the sidecar (every allow, and every denial that depends on more than
    /// who asks for which target).
    pub fn decide(
        &self,
        agent: &str,
        facts: &RequestFacts,
        digest: &str,
    ) -> Option<DecisionResponse> {
        let method = facts.method.as_str();
        let (kind, target) = match method {
            "tools/call" => ("tools", facts.tool.as_deref()),
            "resources/read" => ("resources", facts.resource_uri.as_deref()),
            "prompts/get" => ("prompts", facts.prompt_name.as_deref()),
            "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
                ("listing", None)
            }
            _ => return None,
        };
        let server = facts.server.as_str();
        let mut denials = Vec::new();
        // An agent the table does not know is the sidecar's to decide (see the module doc).
        let grants = self.agents.get(agent)?;
        {
            match grants.servers.get(server) {
                None => denials.push(Denial {
                    rule: "behavry.server.not_granted".into(),
                    reason: format!("agent '{agent}' has no access to server '{server}'"),
                    conceal: false,
                }),
                Some(patterns) => {
                    let Some(target) = target else {
                        // A listing the agent may see something of, or a call that names no
                        // target: the sidecar decides.
                        return None;
                    };
                    let granted = match kind {
                        "tools" => &patterns.tools,
                        "resources" => &patterns.resources,
                        _ => &patterns.prompts,
                    };
                    if !pattern_list_matches(granted, target) {
                        let singular = kind.trim_end_matches('s');
                        denials.push(Denial {
                            rule: format!("behavry.{kind}.not_granted"),
                            reason: format!(
                                "agent '{agent}' may not use {singular} '{target}' on server '{server}'"
                            ),
                            conceal: true,
                        });
                    }
                }
            }
        }
        if method == "tools/call"
            && let Some(tool) = target
            && self.is_blocked(server, tool)
        {
            denials.push(Denial {
                rule: "behavry.tools.blocked".into(),
                reason: format!("tool '{tool}' on server '{server}' is blocked"),
                conceal: true,
            });
        }
        if denials.is_empty() {
            return None;
        }
        let conceal = denials.iter().any(|d| d.conceal);
        Some(DecisionResponse {
            allow: false,
            reasons: denials.iter().map(|d| d.reason.clone()).collect(),
            rule_ids: denials.into_iter().map(|d| d.rule).collect(),
            bundle_digest: digest.to_owned(),
            obligations: Obligations {
                conceal,
                ..Obligations::default()
            },
            client_matches: None,
            approval: None,
        })
    }

    fn is_blocked(&self, server: &str, tool: &str) -> bool {
        [server, "*"].iter().any(|key| {
            self.blocked
                .get(*key)
                .is_some_and(|patterns| pattern_list_matches(patterns, tool))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DecisionTable {
        serde_json::from_value(serde_json::json!({
            "blocked": {"everything": ["get-env"], "*": ["shutdown"]},
            "agents": {
                "dev": {"servers": {"everything": {"tools": ["echo", "get-*"], "resources": ["demo://*"]}}},
                "ops": {"servers": {"everything": {"tools": ["*"]}}}
            }
        }))
        .unwrap()
    }

    fn call(method: &str, server: &str, target: Option<&str>) -> RequestFacts {
        RequestFacts {
            server: server.into(),
            method: method.into(),
            tool: target.filter(|_| method == "tools/call").map(str::to_owned),
            resource_uri: target
                .filter(|_| method == "resources/read")
                .map(str::to_owned),
            prompt_name: target
                .filter(|_| method == "prompts/get")
                .map(str::to_owned),
            ..RequestFacts::default()
        }
    }

    fn rules(decision: Option<DecisionResponse>) -> Option<(Vec<String>, bool)> {
        decision.map(|d| (d.rule_ids, d.obligations.conceal))
    }

    #[test]
    fn only_unconditional_denials_are_decided() {
        let t = table();
        let decide = |agent, method, server, target| {
            rules(t.decide(agent, &call(method, server, target), "sha256:x"))
        };
        // Allowed calls and listings the agent may see go to the sidecar.
        assert_eq!(
            decide("dev", "tools/call", "everything", Some("echo")),
            None
        );
        assert_eq!(
            decide("dev", "tools/call", "everything", Some("get-sum")),
            None
        );
        assert_eq!(decide("dev", "tools/list", "everything", None), None);
        assert_eq!(
            decide("dev", "resources/read", "everything", Some("demo://a")),
            None
        );
        // Other methods are not the table's business.
        assert_eq!(decide("nobody", "ping", "everything", None), None);

        // An agent the table does not list may be newer than the table: the sidecar decides.
        assert_eq!(
            decide("nobody", "tools/call", "everything", Some("echo")),
            None
        );
        assert_eq!(
            decide("nobody", "tools/call", "everything", Some("get-env")),
            None
        );
        assert_eq!(
            decide("dev", "tools/list", "files", None),
            Some((vec!["behavry.server.not_granted".into()], false))
        );
        assert_eq!(
            decide("dev", "tools/call", "everything", Some("trigger")),
            Some((vec!["behavry.tools.not_granted".into()], true))
        );
        assert_eq!(
            decide("dev", "prompts/get", "everything", Some("p")),
            Some((vec!["behavry.prompts.not_granted".into()], true))
        );
        // Blocked beats a wildcard grant; both rules are named when both apply.
        assert_eq!(
            decide("ops", "tools/call", "everything", Some("get-env")),
            Some((vec!["behavry.tools.blocked".into()], true))
        );
        assert_eq!(
            decide("ops", "tools/call", "everything", Some("shutdown")),
            Some((vec!["behavry.tools.blocked".into()], true))
        );
        // Granted by a pattern, blocked all the same.
        assert_eq!(
            decide("dev", "tools/call", "everything", Some("get-env")),
            Some((vec!["behavry.tools.blocked".into()], true))
        );
        // Not granted and blocked: both rules.
        assert_eq!(
            decide("dev", "tools/call", "everything", Some("shutdown")),
            Some((
                vec![
                    "behavry.tools.not_granted".into(),
                    "behavry.tools.blocked".into()
                ],
                true
            ))
        );
    }

    #[test]
    fn reasons_are_the_bundles() {
        let decision = table()
            .decide(
                "dev",
                &call("tools/call", "everything", Some("x")),
                "sha256:d",
            )
            .unwrap();
        assert_eq!(
            decision.reasons,
            ["agent 'dev' may not use tool 'x' on server 'everything'"]
        );
        assert_eq!(decision.bundle_digest, "sha256:d");
        assert!(!decision.allow);
    }
}
