# Rego tests of the default bundle's building blocks (package behavry.authz): the matchers the
# argument rules and grants are made of, called directly. Decisions are tested by the YAML cases
# (tests/default.yaml), which give the bundle its input the way the sidecar does. Every `test_`
# rule must be true; run by `behavry policy test policies`, `cargo test -p behavry-authz` and
# `opa test policies/`.
package behavry.authz_test

import rego.v1

import data.behavry.authz

test_names_match_exactly_by_star_or_by_prefix if {
	authz.matches(["echo"], "echo")
	authz.matches(["*"], "anything")
	authz.matches(["get-*"], "get-sum")
	not authz.matches(["get-*"], "set-sum")
	not authz.matches(["echo"], "echo2")
	not authz.matches([], "echo")
}

test_paths_stay_inside_their_directories if {
	authz.path_within("/srv/shared", ["/srv/shared/"])
	authz.path_within("/srv/shared/a/b.txt", ["/srv/shared/"])
	authz.path_within("/srv/shared/a", ["/srv/shared"])
	not authz.path_within("/srv/shared-other/a", ["/srv/shared/"])
	not authz.path_within("/srv/shared/../etc/passwd", ["/srv/shared/"])
	not authz.path_within("/srv/shared/..", ["/srv/shared/"])
	not authz.path_within("/srv/shared/a\\..\\..\\b", ["/srv/shared/"])
	not authz.path_within("/srv/shared/a\u0000", ["/srv/shared/"])
	not authz.path_within("srv/shared/a", ["/srv/shared/"])
	not authz.path_within(7, ["/srv/shared/"])
}

test_dots_inside_names_are_not_parent_segments if {
	authz.path_within("/srv/shared/a..b/c", ["/srv/shared/"])
	authz.path_within("/srv/shared/.hidden", ["/srv/shared/"])
}

https_only := {"hosts": ["example.com", "*.example.org"]}

test_urls_are_judged_by_scheme_and_host if {
	authz.url_allowed("https://example.com", https_only)
	authz.url_allowed("https://EXAMPLE.com./x", https_only)
	authz.url_allowed("https://user:pw@example.com:443/x?y#z", https_only)
	authz.url_allowed("https://a.b.example.org/", https_only)
	not authz.url_allowed("https://example.org/", https_only)
	not authz.url_allowed("http://example.com/", https_only)
	not authz.url_allowed("https://example.com.evil.test/", https_only)
	not authz.url_allowed("https://evil.test#@example.com", https_only)
	not authz.url_allowed("https://evil.test?@example.com", https_only)
	not authz.url_allowed("https://example.com\t.evil.test/", https_only)
	not authz.url_allowed("https://[::1]/", https_only)
	not authz.url_allowed("//example.com/", https_only)
	not authz.url_allowed("example.com", https_only)
	not authz.url_allowed({"url": "https://example.com"}, https_only)
}

test_schemes_can_be_widened if {
	authz.url_allowed("http://example.com/", {"hosts": ["example.com"], "schemes": ["http", "https"]})
}

test_read_only_sql_is_recognised if {
	authz.sql_read_only("select 1")
	authz.sql_read_only("  SELECT a FROM t WHERE b = 'x';  ")
	authz.sql_read_only("with x as (select 1) select * from x")
	authz.sql_read_only("EXPLAIN SELECT * FROM t")
	authz.sql_read_only("show tables")
	authz.sql_read_only("select updated_at, deleted_flag from t")
}

test_writing_or_hidden_sql_is_refused if {
	not authz.sql_read_only("insert into t values (1)")
	not authz.sql_read_only("select 1; select 2")
	not authz.sql_read_only("select 1 -- ; drop table t")
	not authz.sql_read_only("select 1 # comment")
	not authz.sql_read_only("select * from t for update")
	not authz.sql_read_only("select pg_sleep(1) into x")
	not authz.sql_read_only("Update t set a = 1")
	not authz.sql_read_only("select 1\nunion all\ndelete from t")
	not authz.sql_read_only("")
	not authz.sql_read_only(42)
}

test_length_limits_count_characters if {
	authz.length_within("héllo", 5)
	not authz.length_within("héllo!", 5)
	not authz.length_within(["a"], 5)
}

# A call whose arguments carry an e-mail address another server returned (input.flow).
flowed_email := {
	"agent": {"id": "dev", "scopes": ["mcp"]},
	"request": {"server": "everything", "method": "tools/call", "tool": "echo", "arguments": {"message": "x"}},
	"flow": {"findings": [{"detector": "email", "severity": "medium", "pointer": "/message", "from": {"server": "crm", "tool": "lookup"}}]},
}

test_a_value_from_another_server_is_denied_when_its_detector_is_listed if {
	some denial in authz.denials with input as flowed_email with data.behavry.flow.deny_detectors as ["email"]
	denial.rule == "behavry.flow.cross_server"
	denial.reason == "the arguments carry a email at /message that server 'crm' returned: it is not passed on to server 'everything'"
}

test_a_value_from_another_server_is_recorded_only_when_its_detector_is_not_listed if {
	denials := authz.denials with input as flowed_email
	every denial in denials {
		denial.rule != "behavry.flow.cross_server"
	}
}

# An elevated role's destructive call after an answer flagged for injection (input.flow.injection).
flagged_then_destructive := {
	"agent": {"id": "ops", "scopes": ["mcp"]},
	"request": {"server": "everything", "method": "tools/call", "tool": "echo", "arguments": {"message": "x"}},
	"tool": {"annotations": {"destructiveHint": true}},
	"flow": {"injection": [{"from": {"server": "web", "tool": "fetch"}, "score": 100, "rules": ["instruction_override"], "atMs": 1}]},
}

test_a_flagged_answer_holds_destructive_calls_unless_the_bundle_says_never if {
	some denial in authz.denials with input as flagged_then_destructive
	denial.rule == "behavry.flow.injection_then_destructive"
	denial.approval == true
	never := authz.denials with input as flagged_then_destructive with data.behavry.flow.destructive_after_injection_from as null
	every denial in never {
		denial.rule != "behavry.flow.injection_then_destructive"
	}
	approved := authz.denials with input as object.union(flagged_then_destructive, {"approval": {"granted": true}})
	every denial in approved {
		denial.rule != "behavry.flow.injection_then_destructive"
	}
}

# A call to a server blocked for a poisoned tool (input.serverPoisoning).
blocked_server_call := {
	"agent": {"id": "dev", "scopes": ["mcp"]},
	"request": {"server": "everything", "method": "tools/call", "tool": "echo", "arguments": {"message": "x"}},
	"serverPoisoning": {"tool": "add", "score": 100},
}

test_a_blocked_server_is_denied_when_blocking_is_on if {
	some denial in authz.denials with input as blocked_server_call with data.behavry.poisoning.block_server_from as 90
	denial.rule == "behavry.server.poisoned"
	denial.reason == "server 'everything' is blocked: its tool 'add' scores 100 for poisoning"
}

test_a_blocked_server_is_not_denied_when_blocking_is_off if {
	denials := authz.denials with input as blocked_server_call
	every denial in denials {
		denial.rule != "behavry.server.poisoned"
	}
}

test_the_listing_asks_to_block_servers_only_when_blocking_is_on if {
	listing := {"agent": {"id": "dev", "scopes": ["mcp"]}, "request": {"server": "everything", "method": "tools/list"}}
	authz.poisoning_obligation == {"poisoning": {"hideFrom": 50}} with input as listing
	on := authz.poisoning_obligation with input as listing with data.behavry.poisoning.block_server_from as 90
	on == {"poisoning": {"hideFrom": 50, "blockServerFrom": 90}}
}
