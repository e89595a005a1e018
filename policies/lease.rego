# Leases of allowed calls (docs/policy.md, "Leases"), part of the default bundle's package.
package behavry.authz

import rego.v1

# A lease (docs/policy.md, "Leases"): the proxy may allow more calls like this one by itself for
# a few seconds, each counted as one call (the sidecar reserves them now, the proxy gives back
# what it does not use). Only for calls whose decision rests on nothing but who asks for which
# target and the target's annotations — the proxy's key for the lease — and on what the proxy
# checks itself: the arguments' size (maxArgumentBytes) and `max_length` argument rules
# (maxArgumentChars). Not for a target with other argument rules, nothing destructive, no
# approval. A lease takes at most a `share` of what is left of each calls budget after this
# call, and of each bytes budget (the proxy ends the lease once the answers of its calls reach
# that many bytes): near a limit, leases shrink to nothing and every call is asked.
lease_obligation := {"lease": object.union_n([
	{
		"calls": lease_calls,
		"seconds": lease_seconds,
		"maxArgumentBytes": max_argument_bytes,
	},
	lease_chars_obligation,
	lease_bytes_obligation,
])} if {
	method in {"tools/call", "resources/read", "prompts/get"}
	not destructive
	not lease_unchecked_rule
	not input.approval
	lease_calls > 0
	lease_seconds = data.behavry.lease.seconds # `=`: no lease without its data (VM too)
	max_argument_bytes = data.behavry.limits.max_argument_bytes
	not lease_bytes_exhausted
}

# An argument rule the proxy cannot keep by itself.
lease_unchecked_rule if {
	some r in argument_rules
	r.rule != "max_length"
}

default lease_chars_obligation := {}

lease_chars_obligation := {"maxArgumentChars": {name: min(maxes) |
	some r in argument_rules
	name := r.argument
	maxes := {m | some q in argument_rules; q.argument == name; m := q.max}
}} if count(argument_rules) > 0

lease_calls := min({cap} | {n |
	some [scope, window, "calls", limit] in budget_limits
	used = input.counters[scope][window].calls
	n := floor((limit - used - 1) / share)
}) if {
	cap = data.behavry.lease.calls
	share = data.behavry.lease.share
	share > 0
}

# What a lease may take of the bytes budgets (none: no bytes limit applies).
lease_bytes contains n if {
	share = data.behavry.lease.share
	some [scope, window, "bytes", limit] in budget_limits
	used = input.counters[scope][window].bytes
	n := floor((limit - used) / share)
}

default lease_bytes_obligation := {}

lease_bytes_obligation := {"maxResponseBytes": min(lease_bytes)} if count(lease_bytes) > 0

lease_bytes_exhausted if {
	some n in lease_bytes
	n <= 0
}
