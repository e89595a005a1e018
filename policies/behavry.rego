# Behavry default authorization policy for governed MCP requests.
#
# Input: the authz-sidecar's DecisionRequest (see docs/authz.md), e.g.
#   {"traceId": "...", "agent": {"id": "demo-agent", "scopes": ["mcp"], "delegation": ["sub-agent"]},
#    "request": {"server": "everything", "method": "tools/call", "tool": "echo", "arguments": {...}}}
# Data:  data.behavry.agents[<agent id>].servers[<server>].{tools, resources, prompts}, filled by the
#        sidecar from the agent registry; data.behavry.tool_scopes[<server>][<tool>] = scope a tool
#        needs beyond the agent's grant (data.json).
# Entry: data.behavry.authz.decision = {"allow": bool, "reasons": [string], "ruleIds": [string],
#        "requiredScope": string (only on a step-up denial)}.
#
# Deny by default: a request is allowed only when an allow rule matches and no deny rule does.
# Every denial carries a reason the agent can read and a stable rule id.
package behavry.authz

import rego.v1

# The decision when nothing matched at all (should not happen: every governed method has a rule).
default decision := {
	"allow": false,
	"reasons": ["no policy rule allowed this request"],
	"ruleIds": ["behavry.default_deny"],
}

decision := {"allow": true, "reasons": [], "ruleIds": sort([id | some id in allowed_by])} if {
	count(denials) == 0
	count(allowed_by) > 0
}

decision := object.union({
	"allow": false,
	"reasons": [d.reason | some d in denials],
	"ruleIds": [d.rule | some d in denials],
}, step_up) if {
	count(denials) > 0
}

# A denial for want of a scope names it, so the proxy can answer 403 insufficient_scope with the
# scope to ask for (RFC 6750 §3.1; MCP authorization, step-up).
default step_up := {}

step_up := {"requiredScope": d.scope} if {
	some d in denials
	d.rule == "behavry.scope.insufficient"
}

# ---------------------------------------------------------------------------------------------
# Facts

agent_id := input.agent.id

server := input.request.server

method := input.request.method

# The enrollment of the calling agent, undefined when not enrolled.
enrollment := data.behavry.agents[agent_id]

# What the agent may use on the requested server, undefined when nothing.
grant := enrollment.servers[server]

governed_methods := {"tools/call", "resources/read", "prompts/get"}

# A grant list names what it allows; "*" allows every name on that server.
granted(list, name) if name in list

granted(list, _) if "*" in list

# ---------------------------------------------------------------------------------------------
# Allow rules: the rule id is the element.

allowed_by contains "behavry.tools.granted" if {
	method == "tools/call"
	granted(grant.tools, input.request.tool)
}

allowed_by contains "behavry.resources.granted" if {
	method == "resources/read"
	granted(grant.resources, input.request.resourceUri)
}

allowed_by contains "behavry.prompts.granted" if {
	method == "prompts/get"
	granted(grant.prompts, input.request.promptName)
}

# ---------------------------------------------------------------------------------------------
# Deny rules: {"rule": id, "reason": text}. Each names exactly what was refused.

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
	not method in governed_methods
}

denials contains {
	"rule": "behavry.server.not_granted",
	"reason": sprintf("agent '%s' has no access to server '%s'", [agent_id, server]),
} if {
	enrollment
	method in governed_methods
	not grant
}

denials contains {
	"rule": "behavry.request.name_missing",
	"reason": sprintf("%s request names no %s", [method, name_field[method]]),
} if {
	grant
	not is_string(input.request[name_field[method]])
}

name_field := {"tools/call": "tool", "resources/read": "resourceUri", "prompts/get": "promptName"}

# The scopes of the caller's token (RFC 9068 §2.2.3), as the proxy verified them.
token_scopes := {s | some s in input.agent.scopes}

# The scope a granted tool needs beyond the grant, if any.
needed_scope := data.behavry.tool_scopes[server][input.request.tool] if method == "tools/call"

denials contains {
	"rule": "behavry.scope.insufficient",
	"reason": sprintf("tool '%s' on server '%s' needs scope '%s': ask for a token with it", [input.request.tool, server, needed_scope]),
	"scope": needed_scope,
} if {
	method == "tools/call"
	grant
	granted(grant.tools, input.request.tool)
	not needed_scope in token_scopes
}

denials contains {
	"rule": "behavry.tools.not_granted",
	"reason": sprintf("agent '%s' may not call tool '%s' on server '%s'", [agent_id, input.request.tool, server]),
} if {
	method == "tools/call"
	is_string(input.request.tool)
	grant
	not granted(grant.tools, input.request.tool)
}

denials contains {
	"rule": "behavry.resources.not_granted",
	"reason": sprintf("agent '%s' may not read resource '%s' on server '%s'", [agent_id, input.request.resourceUri, server]),
} if {
	method == "resources/read"
	is_string(input.request.resourceUri)
	grant
	not granted(grant.resources, input.request.resourceUri)
}

denials contains {
	"rule": "behavry.prompts.not_granted",
	"reason": sprintf("agent '%s' may not get prompt '%s' on server '%s'", [agent_id, input.request.promptName, server]),
} if {
	method == "prompts/get"
	is_string(input.request.promptName)
	grant
	not granted(grant.prompts, input.request.promptName)
}
