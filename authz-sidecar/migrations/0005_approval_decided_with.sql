-- How the person who decided an approval was known (docs/policy.md, "Who decides"): 'approver'
-- (their own credential, `[[approvers]]`) or 'admin' (the admin credential and the name it gave).
-- Rows decided before this column existed read NULL: as 'admin'. Portable SQL like 0001.
ALTER TABLE authz_approvals ADD COLUMN decided_with TEXT;
