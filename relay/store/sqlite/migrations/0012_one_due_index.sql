-- deliveries_due served one read, the workers' lag on the backlog gauge, which now seeks each tenant's
-- soonest due row in deliveries_due_tenant, the claim's index. One b-tree fewer written for every new
-- delivery, every claim and every outcome (a tenth of the pages a one-webhook commit writes).
DROP INDEX deliveries_due;
