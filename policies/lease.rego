# Leases of allowed calls (docs/policy.md, "Leases"), part of the default bundle's package.
package behavry.authz

import rego.v1

# A lease (docs/policy.md, "Leases"): the proxy may allow more calls like this one by itself for
# a few seconds, each counted as one call (the sidecar reserves them now, the proxy gives back
# what it does not use). Only for calls whose decision rests on nothing but who asks for which
# target and the target's annotations — the proxy's key for the lease: no argument rules (the
# argument-size limit the proxy keeps itself, on the whole request body), nothing destructive,
# no approval, no task. A lease takes at most a `share` of what is left of each calls budget
# after this call, and of each bytes budget (the proxy ends the lease once the answers of its
# calls reach that many bytes): near a limit, leases shrink to nothing and every call is asked.
lease_obligation := {"lease": object.union(
	{
		"calls": lease_calls,
		"seconds": lease_seconds,
		"maxRequestBytes": max_request_bytes,
	},
	lease_bytes_obligation,
)} if {
	method in {"tools/call", "resources/read", "prompts/get"}
	not destructive
	count(argument_rules) == 0
	not input.approval
	lease_calls > 0
	lease_seconds = data.behavry.lease.seconds # `=`: no lease without its data (VM too)
	max_request_bytes = data.behavry.limits.max_argument_bytes
	not lease_bytes_exhausted
}

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
