# Argument rules of the default bundle: data.behavry.arguments[<server>][<tool> or "*"] is a list
# of rules, each {"rule": kind, "argument": name, ...}:
#   path_prefix  "prefixes": [dir, ...]   the argument is a path inside one of the directories
#   url_allow    "hosts": [host | "*.domain"], "schemes": [scheme] (default ["https"])
#   sql_read_only                         the argument is one read-only SQL statement
#   max_length   "max": n                 the argument (a string) has at most n characters
# and data.behavry.limits.max_argument_bytes caps the JSON size of all arguments of any call
# (input.request.argumentsBytes as the proxy measured it, else json.marshal here).
# A call that does not send the argument a path_prefix, url_allow or sql_read_only rule names is
# denied by that rule (the tool's default could be anything); max_length checks only an argument
# that is sent.
package behavry.authz

import rego.v1

arguments := object.get(input.request, "arguments", {})

argument_rules contains r if {
	method == "tools/call"
	some key in [target, "*"]
	some r in data.behavry.arguments[server][key]
}

# The rules' denials, looked at only when the tool has rules at all (most calls: one check
# instead of one per kind of rule).
denials contains d if {
	some _ in argument_rules
	some d in argument_denials
}

# The value of the argument a rule names, when the call sends it.
ruled_value(r) := arguments[r.argument]

argument_denials contains {
	"rule": "behavry.arguments.path_outside",
	"reason": sprintf("argument '%s' of tool '%s' must be a path under %s", [r.argument, target, concat(", ", r.prefixes)]),
} if {
	some r in argument_rules
	r.rule == "path_prefix"
	not path_within(ruled_value(r), r.prefixes)
}

# A path is inside a directory when it is the directory or starts with it and a "/", and has no
# ".." segment (no way back out) and no NUL or backslash (no second reading of the string).
path_within(path, prefixes) if {
	is_string(path)
	not regex.match(`(^|[/\\])\.\.([/\\]|$)|[\x00\\]`, path)
	some prefix in prefixes
	dir = trim_suffix(prefix, "/")
	path_in_dir(path, dir)
}

path_in_dir(path, dir) if path == dir

path_in_dir(path, dir) if startswith(path, concat("", [dir, "/"]))

argument_denials contains {
	"rule": "behavry.arguments.url_not_allowed",
	"reason": sprintf("argument '%s' of tool '%s' must be a URL of an allowed host", [r.argument, target]),
} if {
	some r in argument_rules
	r.rule == "url_allow"
	not url_allowed(ruled_value(r), r)
}

# scheme://[userinfo@]host[:port][/?#...] (RFC 3986 §3); URLs with a backslash, whitespace or a
# control character are refused, since WHATWG parsers read them differently (e.g. "\" as "/").
url_parts(url) := m[0] if {
	is_string(url)
	not regex.match(`[\\ \x00-\x1f\x7f]`, url)
	m := regex.find_all_string_submatch_n(`^([A-Za-z][A-Za-z0-9+.-]*)://(?:[^/?#@]*@)?([^/?#:@\[\]]+)(?::[0-9]{1,5})?(?:[/?#]|$)`, url, 1)
	count(m) == 1
}

url_allowed(url, r) if {
	parts = url_parts(url) # `=`: undefined for a URL that does not parse (fails on the VM too)
	lower(parts[1]) in object.get(r, "schemes", ["https"])
	host_allowed(lower(trim_suffix(parts[2], ".")), r.hosts)
}

host_allowed(host, hosts) if host in hosts

host_allowed(host, hosts) if {
	some pattern in hosts
	startswith(pattern, "*.")
	endswith(host, substring(pattern, 1, -1))
}

argument_denials contains {
	"rule": "behavry.arguments.sql_not_read_only",
	"reason": sprintf("argument '%s' of tool '%s' must be one read-only SQL statement (SELECT, WITH, EXPLAIN, SHOW)", [r.argument, target]),
} if {
	some r in argument_rules
	r.rule == "sql_read_only"
	not sql_read_only(ruled_value(r))
}

# Conservative: one statement that starts with a reading keyword and names no writing keyword
# anywhere (a literal that merely contains such a word is refused too; comments are refused, so
# nothing can hide in them).
sql_read_only(sql) if {
	is_string(sql)
	statement := lower(trim_space(trim_suffix(trim_space(sql), ";")))
	not contains(statement, ";")
	not regex.match(`--|/\*|#`, statement)
	regex.match(`^(select|with|explain|show|describe|values)([^a-z0-9_]|$)`, statement)
	not regex.match(`(^|[^a-z0-9_])(insert|update|delete|merge|upsert|replace|drop|alter|create|truncate|rename|grant|revoke|attach|detach|copy|call|exec|execute|do|pragma|vacuum|reindex|lock|set|reset|into|load|handler|import)([^a-z0-9_]|$)`, statement)
}

argument_denials contains {
	"rule": "behavry.arguments.too_long",
	"reason": sprintf("argument '%s' of tool '%s' exceeds %d characters", [r.argument, target, r.max]),
} if {
	some r in argument_rules
	r.rule == "max_length"
	value = ruled_value(r) # `=`: an argument the call does not send is not checked (VM too)
	not length_within(value, r.max)
}

length_within(value, max) if {
	is_string(value)
	count(value) <= max
}

denials contains {
	"rule": "behavry.arguments.too_large",
	"reason": sprintf("the arguments of tool '%s' exceed %d bytes", [target, data.behavry.limits.max_argument_bytes]),
} if {
	method == "tools/call"
	argument_bytes > data.behavry.limits.max_argument_bytes
}

# The size of the arguments as compact JSON: as the proxy measured it (the same measure it keeps a
# lease's maxArgumentBytes by), or measured here for a request without it.
argument_bytes := n if {
	n = input.request.argumentsBytes # `=`: undefined when absent (VM too)
} else := count(json.marshal(arguments))
