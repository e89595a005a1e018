# Behavry default authorization policy for MCP requests (policy input v1, docs/policy.md).
#
# Entry: data.behavry.authz.decision =
#   {"allow": bool, "reasons": [string], "ruleIds": [string], "obligations": {...}}
# Data (data.yaml, and data.behavry.agents filled by the sidecar from its registry):
#   roles, blocked, tool_scopes, destructive_tools, elevated_roles, arguments, limits, budgets,
#   redact, cache, dlp, poisoning, pins.
#
# Deny by default: a request is allowed only when an allow rule matches and no deny rule does.
# Every denial has a reason the agent can read and a stable rule id; a tool the agent may not see
# is concealed (reported to the agent as unknown, MCP tools "Error Handling").
#
# This policy runs on every MCP call, so it is written to do little work per decision
# (docs/policy.md, "Writing a fast policy"): it looks grants up by key (agent -> server -> kind)
# instead of collecting them first, checks an exact name before it scans patterns, and builds the
# full pattern sets only for listings. It also stays on the Rego that regorus's VM runs exactly
# like its interpreter: a value that may be undefined is bound with `=` or checked before use
# (never `x := <maybe undefined>` in a rule body, where the VM would not fail), and no `with`.
package behavry.authz

import rego.v1

default decision := {
	"allow": false,
	"reasons": ["no policy rule allowed this request"],
	"ruleIds": ["behavry.default_deny"],
	"obligations": {},
}

decision := {
	"allow": true,
	"reasons": [],
	"ruleIds": sort([id | some id in allowed_by]),
	"obligations": allow_obligations,
} if {
	count(denials) == 0
	count(allowed_by) > 0
}

decision := {
	"allow": false,
	"reasons": [d.reason | some d in denials],
	"ruleIds": [d.rule | some d in denials],
	"obligations": deny_obligations,
} if {
	count(denials) > 0
}

# ---------------------------------------------------------------------------------------------
# Facts

agent_id := input.agent.id

server := input.request.server

method := input.request.method

# The enrollment of the calling agent (registry), undefined when not enrolled.
enrollment := data.behavry.agents[agent_id]

# Which request field names the target of each governed method, and the grant list it is in.
# Subscribing to a resource reaches it as reading it does (unsubscribing only gives up access:
# the proxy passes it undecided).
target_field := {
	"tools/call": "tool", "resources/read": "resourceUri", "prompts/get": "promptName",
	"resources/subscribe": "resourceUri",
}

grant_kind := {
	"tools/call": "tools", "resources/read": "resources", "prompts/get": "prompts",
	"resources/subscribe": "resources",
	"tools/list": "tools", "prompts/list": "prompts", "resources/list": "resources",
	"resources/templates/list": "resources", "tasks/list": "tools",
	"tasks/get": "tools", "tasks/result": "tools", "tasks/cancel": "tools", "tasks/update": "tools",
}

# A completion (completion/complete) names the prompt or the resource template whose argument it
# completes: it reaches what it names, and is decided like a use of it.
completion_field := "promptName" if {
	method == "completion/complete"
	input.request.promptName
} else := "resourceUri" if {
	method == "completion/complete"
}

completion_kind := {"promptName": "prompts", "resourceUri": "resources"}

# Requests about a task (MCP 2025-11-25 basic/utilities/tasks): its target is the tool whose
# call created the task, as the proxy recorded it (input.task).
task_methods := {"tasks/get", "tasks/result", "tasks/cancel", "tasks/update"}

task_method if method in task_methods

# Listing answers are filtered to what the agent may use (the member that names each entry);
# a task listing, to the agent's own tasks (by the proxy).
listing_methods := {"tools/list", "prompts/list", "resources/list", "resources/templates/list", "tasks/list"}

field := target_field[method]

field := completion_field

governed if field

governed if task_method

listing if method in listing_methods

target := input.request[field]

target := input.task.tool if task_method

kind := grant_kind[method]

kind := completion_kind[completion_field]

# The grants that apply on the requested server come from the agent's own (registry,
# enrollment.servers) and its roles' (data.behavry.roles[role].servers). Whether there is any:
server_granted if enrollment.servers[server]

server_granted if {
	some role in enrollment.roles
	data.behavry.roles[role].servers[server]
}

# Whether the target is granted: by the agent's own grant or by one of its roles', each a list of
# name patterns for the method's kind (exact names, "*" or "prefix*").
target_granted if matches(enrollment.servers[server][kind], target)

target_granted if {
	some role in enrollment.roles
	matches(data.behavry.roles[role].servers[server][kind], target)
}

# Every pattern granted for the method's kind (what a listing may show).
granted_patterns contains p if {
	some p in enrollment.servers[server][kind]
}

granted_patterns contains p if {
	some role in enrollment.roles
	some p in data.behavry.roles[role].servers[server][kind]
}

# Token scopes (RFC 9068 §2.2.3) of the form "mcp:server:<name>" narrow the token to those
# servers, whatever the roles grant; a token without such a scope is not narrowed.
server_in_scope if not strings.any_prefix_match(input.agent.scopes, "mcp:server:")

server_in_scope if concat("", ["mcp:server:", server]) in input.agent.scopes

# A name matches a pattern list: exactly, by "*", or by a "prefix*" pattern. The cheap checks
# come first; the list is scanned only when they fail.
matches(patterns, name) if {
	name in patterns
} else := true if {
	"*" in patterns
} else := true if {
	some p in patterns
	endswith(p, "*")
	startswith(name, trim_suffix(p, "*"))
}

# Tools blocked outright on this server (or on every server, key "*"): never callable, never listed.
target_blocked if {
	tool_target
	some key in [server, "*"]
	matches(data.behavry.blocked[key], target)
}

# The target is a tool: a tool call or a request about the task one created.
tool_target if method == "tools/call"

tool_target if task_method

blocked_patterns contains p if {
	some key in [server, "*"]
	some p in data.behavry.blocked[key]
}

# Destructive tools: by annotation (MCP tools, ToolAnnotations: destructiveHint is meaningful only
# when readOnlyHint is false; annotations are hints from the server, so they can only add
# restrictions here) or by configured name.
destructive if {
	method == "tools/call"
	input.tool.annotations.destructiveHint == true
	not input.tool.annotations.readOnlyHint == true
}

destructive if {
	method == "tools/call"
	matches(data.behavry.destructive_tools[server], target)
}

elevated if {
	some role in enrollment.roles
	role in data.behavry.elevated_roles
}

# ---------------------------------------------------------------------------------------------
# Allow rules: the rule id is the element.

allowed_by contains sprintf("behavry.%s.granted", [kind]) if {
	governed
	target_granted
}

allowed_by contains "behavry.listing.filtered" if {
	listing
	server_granted
}

# ---------------------------------------------------------------------------------------------
# Deny rules: {"rule": id, "reason": text}, each naming exactly what was refused. Extra members:
# "conceal" (answer as if the target did not exist), "scope" (step-up), "approval".

denials contains {
	"rule": "behavry.agent.not_enrolled",
	"reason": sprintf("agent '%s' is not enrolled", [agent_id]),
} if {
	not enrollment
}

denials contains {
	"rule": "behavry.method.not_governed",
	"reason": sprintf("method '%s' is not decided by this policy", [method]),
} if {
	enrollment
	not governed
	not listing
}

denials contains {
	"rule": "behavry.server.not_granted",
	"reason": sprintf("agent '%s' has no access to server '%s'", [agent_id, server]),
} if {
	enrollment
	kind
	not server_granted
}

denials contains {
	"rule": "behavry.scope.server_not_in_token",
	"reason": sprintf("the token's scopes do not include server '%s'", [server]),
} if {
	server_granted
	not server_in_scope
}

denials contains {
	"rule": "behavry.request.name_missing",
	"reason": sprintf("%s request names no %s", [method, field]),
} if {
	field
	server_granted
	not is_string(target)
}

# A task is the agent's whose call created it (MCP tasks, "Task Isolation and Access Control":
# tasks are bound to the authorization context that created them). One this gateway did not see
# created by this agent through the same delegation chain is answered as unknown, whoever else it
# may belong to (the proxy refuses it first; this holds for any other caller of the sidecar).
task_owned if {
	input.task.agent == agent_id
	object.get(input.task, "delegation", []) == object.get(input.agent, "delegation", [])
}

denials contains {
	"rule": "behavry.tasks.not_owned",
	"reason": sprintf("no task '%s' created by agent '%s' on server '%s' is known", [object.get(input.request, "taskId", ""), agent_id, server]),
	"conceal": true,
} if {
	task_method
	server_granted
	not task_owned
}

denials contains {
	"rule": sprintf("behavry.%s.not_granted", [kind]),
	"reason": sprintf("agent '%s' may not use %s '%s' on server '%s'", [agent_id, singular[kind], target, server]),
	"conceal": true,
} if {
	governed
	is_string(target)
	server_granted
	not target_granted
}

singular := {"tools": "tool", "resources": "resource", "prompts": "prompt"}

denials contains {
	"rule": "behavry.tools.blocked",
	"reason": sprintf("tool '%s' on server '%s' is blocked", [target, server]),
	"conceal": true,
} if {
	target_blocked
}

# The scope a granted tool needs beyond the grant (step-up, RFC 6750 §3.1 insufficient_scope),
# also to reach the task a call of it created.
needed_scope := data.behavry.tool_scopes[server][target] if tool_target

denials contains {
	"rule": "behavry.scope.insufficient",
	"reason": sprintf("tool '%s' on server '%s' needs scope '%s': ask for a token with it", [target, server, needed_scope]),
	"scope": needed_scope,
} if {
	needed_scope # defined: the tool needs a scope
	target_granted
	not needed_scope in input.agent.scopes
}

denials contains {
	"rule": "behavry.destructive.needs_approval",
	"reason": sprintf("tool '%s' on server '%s' is destructive: it needs an elevated role or a human approval", [target, server]),
	"approval": true,
} if {
	destructive
	target_granted
	not elevated
	not input.approval.granted == true
}

# A tool whose listed definition the proxy's poisoning scanner scored at or above the bundle's
# threshold (input.tool.poisoning, docs/poisoning.md): hidden from listings, unknown to calls.
denials contains {
	"rule": "behavry.tools.poisoned",
	"reason": sprintf("tool '%s' on server '%s' is hidden: its definition scores %d for poisoning (%s)", [target, server, input.tool.poisoning.score, concat(", ", input.tool.poisoning.rules)]),
	"conceal": true,
} if {
	tool_target
	input.tool.poisoning.score >= data.behavry.poisoning.hide_from
}

# A tool whose listed definition is not the one pinned for it (input.tool.pin, docs/pins.md): a
# rug pull until someone approves the new definition (`behavry pins approve`).
denials contains {
	"rule": "behavry.tools.quarantined",
	"reason": sprintf("tool '%s' on server '%s' is quarantined: its definition %s is %s, not the pinned one", [target, server, input.tool.pin.hash, input.tool.pin.status]),
	"conceal": true,
} if {
	tool_target
	input.tool.pin.status in data.behavry.pins.quarantine
}

# The agent acts on a description the server has since changed: it must read the new one.
denials contains {
	"rule": "behavry.tools.changed_since_listing",
	"reason": sprintf("tool '%s' on server '%s' changed since this session listed it: list the tools again", [target, server]),
} if {
	method == "tools/call"
	input.tool.pin.changedSinceListing == true
}

# A secret the proxy's scanners found in the arguments (input.findings, docs/dlp.md) that no
# server should get, whoever asks.
denials contains {
	"rule": "behavry.dlp.secret_in_arguments",
	"reason": sprintf("the arguments carry a %s at %s: it is not sent to server '%s'", [f.detector, f.pointer, server]),
} if {
	governed
	some f in input.findings
	f.detector in data.behavry.dlp.deny_in_arguments
}

# A server whose listing had a tool poisoned past the block threshold (input.serverPoisoning,
# docs/poisoning.md): none of its tools is called until a listing of it is clean.
denials contains {
	"rule": "behavry.server.poisoned",
	"reason": sprintf("server '%s' is blocked: its tool '%s' scores %d for poisoning", [server, blocked.tool, blocked.score]),
} if {
	governed
	blocked := input.serverPoisoning
	from := data.behavry.poisoning.block_server_from
	from != null
	blocked.score >= from
}

# A value another server returned to the agent, passed on to this one (input.flow,
# docs/injection.md "Cross-server flow").
denials contains {
	"rule": "behavry.flow.cross_server",
	"reason": sprintf("the arguments carry a %s at %s that server '%s' returned: it is not passed on to server '%s'", [f.detector, f.pointer, f.from.server, server]),
} if {
	governed
	some f in input.flow.findings
	f.detector in data.behavry.flow.deny_detectors
}

# A destructive call by an elevated role while the agent's recent answers hold one flagged for
# prompt injection at or above the bundle's score (input.flow.injection, docs/injection.md "Cross-
# server flow"): the instruction may be the answer's, not the agent's owner's, so a person
# approves it. (Other roles need the approval for any destructive call already.)
denials contains {
	"rule": "behavry.flow.injection_then_destructive",
	"reason": sprintf("tool '%s' on server '%s' is destructive and a recent answer was flagged for prompt injection (score %d): it needs a human approval", [target, server, flagged]),
	"approval": true,
} if {
	destructive
	target_granted
	elevated
	from := data.behavry.flow.destructive_after_injection_from
	from != null
	flagged := max([seen.score | some seen in input.flow.injection])
	flagged >= from
	not input.approval.granted == true
}

# ---------------------------------------------------------------------------------------------
# Obligations

# Denials that depend only on who asks for which name: the filter may cache them.
static_rules := {
	"behavry.agent.not_enrolled", "behavry.server.not_granted", "behavry.scope.server_not_in_token",
	"behavry.tools.not_granted", "behavry.resources.not_granted", "behavry.prompts.not_granted",
	"behavry.tools.blocked", "behavry.method.not_governed",
}

deny_obligations := object.union_n([conceal_obligation, scope_obligation, approval_obligation, deny_cache_obligation])

default conceal_obligation := {}

conceal_obligation := {"conceal": true} if {
	some d in denials
	d.conceal
}

default scope_obligation := {}

scope_obligation := {"requireScope": d.scope} if {
	some d in denials
	d.scope
}

# Approval is offered only when it is all that stands in the way.
default approval_obligation := {}

approval_obligation := {"requireApproval": {"reason": d.reason}} if {
	count(denials) == 1
	some d in denials
	d.approval
}

default deny_cache_obligation := {}

deny_cache_obligation := {"cacheSeconds": data.behavry.cache.deny_seconds} if {
	not task_method # one task's denial says nothing of another's
	every d in denials {
		d.rule in static_rules
	}
}

# An allowed call is either a listing or a governed call, never both. What a listing shows
# depends on who asks (agent, chain, scopes) and where: reusable.
allow_obligations := object.union_n([{"visible": visible, "cacheSeconds": data.behavry.cache.listing_seconds}, poisoning_obligation, pins_obligation]) if {
	listing
	method != "tasks/list"
}

# A tool listing also hides the tools whose definitions score as poisoned.
default poisoning_obligation := {}

poisoning_obligation := {"poisoning": object.union(
	{"hideFrom": data.behavry.poisoning.hide_from},
	{"blockServerFrom": from | from := data.behavry.poisoning.block_server_from; from != null},
)} if method == "tools/list"

# ... and the tools whose definitions are not the pinned ones.
default pins_obligation := {}

pins_obligation := {"pins": {"quarantine": data.behavry.pins.quarantine}} if method == "tools/list"

# A task listing is filtered by the proxy to the agent's own tasks, whatever policy says.
allow_obligations := {"cacheSeconds": data.behavry.cache.listing_seconds} if method == "tasks/list"

allow_obligations := object.union_n([{"budget": budget_consumption}, redact_obligation, lease_obligation, dlp_obligation, injection_obligation]) if governed

# What the proxy does with what its scanners find in what the server sends for the call; none
# for a tool whose answers carry credentials on purpose (its findings are still recorded).
dlp_obligation := {"dlp": {"redact": data.behavry.dlp.redact, "block": data.behavry.dlp.block}} if not dlp_record_only

# What the proxy does with prompt injection in the call's answer (docs/injection.md): the
# thresholds set in data.behavry.injection, the others left out (never reached).
injection_obligation := {"injection": {name: from |
	some key, name in {"wrap_from": "wrapFrom", "redact_from": "redactFrom", "block_from": "blockFrom"}
	from := data.behavry.injection[key]
	from != null
}}

dlp_obligation := {} if dlp_record_only

dlp_record_only if {
	tool_target
	target in data.behavry.dlp.record_only[server]
}

# What is redacted from the content a call returns: a tool's result (also when a task delivers
# it: tasks/result returns the tool's result as it is, tasks/get of the tasks extension carries it
# under `result`), a resource's contents, a prompt's messages.
default redact_obligation := {}

redact_obligation := {"redact": data.behavry.redact[server][target]} if {
	method in {"tools/call", "resources/read", "prompts/get", "tasks/result"}
}

redact_obligation := {"redact": [concat("", ["/result", p]) | some p in pointers]} if {
	method == "tasks/get"
	pointers = data.behavry.redact[server][target] # `=`: no pointers, no obligation (VM too)
}

# A lease of more calls like this one (policies/lease.rego); none unless that file grants one.
default lease_obligation := {}

# What a listing may show: granted patterns minus blocked ones (filtered by the proxy).
visible := {
	"allow": sort([p | some p in granted_patterns]),
	"deny": sort([p | some p in blocked_patterns; kind == "tools"]),
}

budget_consumption := {
	"calls": 1,
	"destructive": count([1 | destructive]),
	"resources": [sprintf("%s/%s", [server, target])],
} if not unmetered

# A request about a task is not a call of its own: the call that created the task was counted
# (the bytes of the result it returns are: the proxy reports them). Completions, sent as a person
# types, are not counted either.
budget_consumption := {"calls": 0, "destructive": 0, "resources": []} if unmetered

unmetered if task_method

unmetered if method == "completion/complete"

# ---------------------------------------------------------------------------------------------
# The decision table (docs/policy.md, "Inline decisions"): what this bundle decides whatever else
# a request says, published to the proxy, which applies it without asking the sidecar. Its
# denials are exactly this bundle's: an agent not listed is not enrolled, a server missing from an
# agent's list is not granted, a target outside its patterns is not granted (concealed), a
# blocked tool is blocked. Evaluated once per bundle and registry change, not per request.
table := {
	"blocked": {key: patterns | some key, patterns in data.behavry.blocked},
	"agents": {id: {"servers": agent_table(id)} | some id, _ in data.behavry.agents},
}

# (Local names differ from the rules above: `server` and `kind` are the request's.)
agent_table(id) := {srv: grants |
	some srv in table_servers(id)
	grants := {k: table_patterns(id, srv, k) | some k in ["tools", "resources", "prompts"]}
}

table_servers(id) := {srv | some srv, _ in data.behavry.agents[id].servers} | {srv |
	some role in data.behavry.agents[id].roles
	some srv, _ in data.behavry.roles[role].servers
}

table_patterns(id, srv, k) := sort([p | some p in own_patterns(id, srv, k) | role_patterns(id, srv, k)])

own_patterns(id, srv, k) := {p | some p in data.behavry.agents[id].servers[srv][k]}

role_patterns(id, srv, k) := {p |
	some role in data.behavry.agents[id].roles
	some p in data.behavry.roles[role].servers[srv][k]
}
