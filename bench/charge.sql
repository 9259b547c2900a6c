-- One credit charge in raw SQL: the database work at the heart of generation_start, run by
-- pgbench against the bench database's real tables (same indexes, constraints and foreign keys).
--
--   lock the balance row  ->  UPDATE the balance  ->  INSERT the ledger entry  ->  COMMIT
--
-- It runs on users that bench/run.py creates only for it (ids :first_user .. :last_user, each with
-- a large balance) and writes ledger-consistent rows (balance_after is the new balance), so
-- `manage.py check_ledger` stays clean. The kind is admin_adjustment because a generation_charge
-- needs a generation row: the service also inserts that row and counts the active runs, which
-- this script leaves out, so the script is an upper bound for the charge alone.
\set uid random(:first_user, :last_user)
BEGIN;
SELECT balance FROM credits_creditbalance WHERE user_id = :uid FOR UPDATE;
UPDATE credits_creditbalance SET balance = balance - 1, updated_at = now()
  WHERE user_id = :uid RETURNING balance AS new_balance \gset
INSERT INTO credits_ledgerentry
  (user_id, kind, amount, balance_after, reason, external_ref, created_at)
  VALUES (:uid, 'admin_adjustment', -1, :new_balance, 'pgbench charge', '', now());
COMMIT;
