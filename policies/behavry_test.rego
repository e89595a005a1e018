# Tests of the default policy (package behavry.authz). Every `test_` rule must be true.
# Run by the authz-sidecar's Rust tests (`cargo test -p behavry-authz`), which load this folder with
# regorus and evaluate each test rule; `opa test policies/` runs them too.
package behavry.authz_test

import rego.v1

import data.behavry.authz

agents := {
	"demo-agent": {"servers": {
		"everything": {
			"tools": ["echo", "get-sum"],
			"resources": ["test://static/resource/1"],
			"prompts": ["simple_prompt"],
		},
		"files": {"tools": [], "resources": [], "prompts": []},
	}},
	"reader": {"servers": {"everything": {"tools": [], "resources": ["test://static/resource/1"], "prompts": []}}},
	"operator": {"servers": {"everything": {"tools": ["*"], "resources": ["*"], "prompts": []}}},
}

call(agent, server, method, extra) := object.union(
	{"traceId": "0af7651916cd43dd8448eb211c80319c", "agent": {"id": agent}},
	{"request": object.union({"server": server, "method": method}, extra)},
)

decide(request) := d if {
	d := authz.decision with input as request with data.behavry.agents as agents
}

test_granted_tool_is_allowed if {
	d := decide(call("demo-agent", "everything", "tools/call", {"tool": "echo", "arguments": {"message": "hi"}}))
	d.allow == true
	d.reasons == []
	d.ruleIds == ["behavry.tools.granted"]
}

test_second_granted_tool_is_allowed if {
	d := authz.decision with input as call_with_scopes("demo-agent", ["mcp", "mcp:compute"], {"tool": "get-sum"})
		with data.behavry.agents as agents
	d.allow == true
}

call_with_scopes(agent, scopes, extra) := object.union(
	call(agent, "everything", "tools/call", extra),
	{"agent": {"id": agent, "scopes": scopes}},
)

test_tool_needing_a_scope_asks_for_step_up if {
	d := authz.decision with input as call_with_scopes("demo-agent", ["mcp"], {"tool": "get-sum"})
		with data.behavry.agents as agents
	d.allow == false
	d.ruleIds == ["behavry.scope.insufficient"]
	d.requiredScope == "mcp:compute"
	d.reasons == ["tool 'get-sum' on server 'everything' needs scope 'mcp:compute': ask for a token with it"]
}

test_step_up_only_for_granted_tools if {
	# An agent without the tool gets the plain denial, not a scope it could never use.
	d := authz.decision with input as call_with_scopes("reader", ["mcp"], {"tool": "get-sum"})
		with data.behavry.agents as agents
	d.ruleIds == ["behavry.tools.not_granted"]
	not d.requiredScope
}

test_tools_without_a_scope_need_none if {
	d := authz.decision with input as call_with_scopes("demo-agent", [], {"tool": "echo"})
		with data.behavry.agents as agents
	d.allow == true
}

test_ungranted_tool_is_denied_with_reason if {
	d := decide(call("demo-agent", "everything", "tools/call", {"tool": "printEnv"}))
	d.allow == false
	d.reasons == ["agent 'demo-agent' may not call tool 'printEnv' on server 'everything'"]
	d.ruleIds == ["behavry.tools.not_granted"]
}

test_tool_granted_on_other_server_only_is_denied if {
	d := decide(call("demo-agent", "files", "tools/call", {"tool": "echo"}))
	d.allow == false
	d.ruleIds == ["behavry.tools.not_granted"]
}

test_unknown_agent_is_denied if {
	d := decide(call("intruder", "everything", "tools/call", {"tool": "echo"}))
	d.allow == false
	d.reasons == ["agent 'intruder' is not enrolled"]
	d.ruleIds == ["behavry.agent.not_enrolled"]
}

test_ungranted_server_is_denied if {
	d := decide(call("demo-agent", "payments", "tools/call", {"tool": "echo"}))
	d.allow == false
	d.reasons == ["agent 'demo-agent' has no access to server 'payments'"]
	d.ruleIds == ["behavry.server.not_granted"]
}

test_granted_resource_is_allowed if {
	d := decide(call("reader", "everything", "resources/read", {"resourceUri": "test://static/resource/1"}))
	d.allow == true
	d.ruleIds == ["behavry.resources.granted"]
}

test_ungranted_resource_is_denied if {
	d := decide(call("reader", "everything", "resources/read", {"resourceUri": "file:///etc/passwd"}))
	d.allow == false
	d.reasons == ["agent 'reader' may not read resource 'file:///etc/passwd' on server 'everything'"]
	d.ruleIds == ["behavry.resources.not_granted"]
}

test_granted_prompt_is_allowed if {
	d := decide(call("demo-agent", "everything", "prompts/get", {"promptName": "simple_prompt"}))
	d.allow == true
	d.ruleIds == ["behavry.prompts.granted"]
}

test_ungranted_prompt_is_denied if {
	d := decide(call("reader", "everything", "prompts/get", {"promptName": "simple_prompt"}))
	d.allow == false
	d.reasons == ["agent 'reader' may not get prompt 'simple_prompt' on server 'everything'"]
	d.ruleIds == ["behavry.prompts.not_granted"]
}

test_tool_name_cannot_read_as_resource if {
	# A tool grant does not grant a resource of the same name.
	d := decide(call("demo-agent", "everything", "resources/read", {"resourceUri": "echo"}))
	d.allow == false
}

test_missing_tool_name_is_denied if {
	d := decide(call("demo-agent", "everything", "tools/call", {}))
	d.allow == false
	d.reasons == ["tools/call request names no tool"]
	d.ruleIds == ["behavry.request.name_missing"]
}

test_ungoverned_method_is_denied if {
	d := decide(call("demo-agent", "everything", "sampling/createMessage", {}))
	d.allow == false
	d.ruleIds == ["behavry.method.not_governed"]
}

test_no_agents_at_all_denies if {
	d := authz.decision with input as call("demo-agent", "everything", "tools/call", {"tool": "echo"})
		with data.behavry.agents as {}
	d.allow == false
	d.ruleIds == ["behavry.agent.not_enrolled"]
}

test_wildcard_grant_allows_any_name_on_that_server if {
	decide(call("operator", "everything", "tools/call", {"tool": "anything-at-all"})).allow == true
	decide(call("operator", "everything", "resources/read", {"resourceUri": "test://x"})).allow == true
}

test_wildcard_grant_stays_on_its_server_and_kind if {
	d := decide(call("operator", "files", "tools/call", {"tool": "read"}))
	d.allow == false
	d.ruleIds == ["behavry.server.not_granted"]
	p := decide(call("operator", "everything", "prompts/get", {"promptName": "x"}))
	p.allow == false
	p.ruleIds == ["behavry.prompts.not_granted"]
}
