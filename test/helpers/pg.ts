// PostgreSQL for the project's tests (testing/postgres.ts, shared with bench/).
export * from "../../testing/postgres.ts";
