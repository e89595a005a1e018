# Blast radius: budgets over sliding windows, per agent and per delegation chain.
#
# data.behavry.budgets.agent[<window>][<counter>] = limit applies to every agent, unless one of
# its roles sets its own: data.behavry.budgets.roles[<role>][<window>][<counter>] (the highest
# of its roles' limits wins). data.behavry.budgets.chain[...] applies to delegated calls (a
# non-empty input.agent.delegation), shared by every call made through the same chain.
# <window> is one of the sidecar's configured windows (e.g. "1m", "1h"); <counter> one of calls,
# destructive, resources (distinct targets touched) and bytes (response bytes). The sidecar puts
# the usage before this call at input.counters.{agent, chain}[<window>][<counter>]; a call is
# refused when it would go over a limit, and when a limit's usage is missing (fail closed).
package behavry.authz

import rego.v1

delegated if count(object.get(input.agent, "delegation", [])) > 0

# [scope, window, counter, limit] for every limit that applies to this call. Most agents have no
# role with limits of its own: theirs are the defaults, read as they are.
budget_limits contains ["agent", window, counter, limit] if {
	not role_budgeted
	some window, limits in data.behavry.budgets.agent
	some counter, limit in limits
}

budget_limits contains ["agent", window, counter, limit] if {
	role_budgeted
	some [window, counter] in agent_limited
	limit = agent_limit(window, counter) # `=`: fails when undefined, on the VM too
}

budget_limits contains ["chain", window, counter, limit] if {
	delegated
	some window, limits in data.behavry.budgets.chain
	some counter, limit in limits
}

# Whether one of the agent's roles sets limits of its own.
role_budgeted if {
	some role in enrollment.roles
	data.behavry.budgets.roles[role]
}

# The [window, counter] pairs limited for the agent, by default or by one of its roles.
agent_limited contains [window, counter] if {
	some window, limits in data.behavry.budgets.agent
	some counter, _ in limits
}

agent_limited contains [window, counter] if {
	some role in enrollment.roles
	some window, limits in data.behavry.budgets.roles[role]
	some counter, _ in limits
}

role_limits(window, counter) := [limit |
	some role in enrollment.roles
	limit = data.behavry.budgets.roles[role][window][counter] # `=`: roles without it add nothing
]

agent_limit(window, counter) := max(limits) if {
	limits := role_limits(window, counter) # a comprehension: always defined
	count(limits) > 0
} else := data.behavry.budgets.agent[window][counter]

# What this call adds to a counter, before it runs.
call_adds := {
	"calls": 1,
	"destructive": count([1 | destructive]),
	"resources": 1,
	"bytes": 0,
} if not unmetered

call_adds := {"calls": 0, "destructive": 0, "resources": 0, "bytes": 0} if unmetered

# A first, cheap pass over the limits: whether any of them is reached or has no usage. Only then
# do the rules below look for what exactly is wrong (a call within every limit, the common case,
# costs one pass instead of three). It may also hold when nothing is wrong (a limit reached by a
# counter this call does not add to): it only decides whether to look.
# Written out per scope, over the data itself, so that the common case (no role with limits of
# its own, within every limit) builds no set of limits at all.
budget_in_question if {
	not role_budgeted
	some window, limits in data.behavry.budgets.agent
	some counter, limit in limits
	not input.counters.agent[window][counter] + call_adds[counter] < limit
}

budget_in_question if {
	role_budgeted
	some ["agent", window, counter, limit] in budget_limits
	not input.counters.agent[window][counter] + call_adds[counter] < limit
}

budget_in_question if {
	delegated
	some window, limits in data.behavry.budgets.chain
	some counter, limit in limits
	not input.counters.chain[window][counter] + call_adds[counter] < limit
}

# What exactly is wrong, looked at only when the first pass says something may be.
denials contains d if {
	governed
	budget_in_question
	some d in budget_denials
}

budget_denials contains {
	"rule": "behavry.budget.exceeded",
	"reason": sprintf("%s budget exceeded: %s %s in %s (limit %d)", [scope, format_int(used, 10), counter, window, limit]),
} if {
	governed
	budget_in_question
	some [scope, window, counter, limit] in budget_limits
	used = input.counters[scope][window][counter] # `=`, not `:=`: no usage, no match (VM too)
	call_adds[counter] > 0
	used + call_adds[counter] > limit
}

budget_denials contains {
	"rule": "behavry.budget.bytes_exceeded",
	"reason": sprintf("%s budget exceeded: %s bytes returned in %s (limit %d)", [scope, format_int(used, 10), window, limit]),
} if {
	governed
	budget_in_question
	some [scope, window, "bytes", limit] in budget_limits
	used = input.counters[scope][window].bytes
	used >= limit
}

budget_denials contains {
	"rule": "behavry.budget.unavailable",
	"reason": sprintf("no %s usage for the %s window: the budget cannot be checked", [scope, window]),
} if {
	governed
	budget_in_question
	some [scope, window, counter, _] in budget_limits
	not input.counters[scope][window][counter]
}
