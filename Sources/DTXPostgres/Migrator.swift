import Logging
import PostgresNIO

/// One schema file from `sql/`, compiled into the binary from that same file (no second copy of the DDL).
public struct Migration: Sendable {
    /// The file name, recorded in `schema_migrations`.
    public let version: String
    public let sql: String

    /// `file`: the file's name in sql/<schema>/; `contents`: the same file, embedded by the package.
    init(_ file: String, _ contents: [UInt8]) {
        self.version = file
        self.sql = String(decoding: contents, as: UTF8.self)
    }
}

/// The schema of one kind of dtx database.
public enum Schema: String, Sendable, CaseIterable {
    case participant
    case coordinator

    public var migrations: [Migration] {
        switch self {
        case .participant:
            return [
                Migration("001_participant_schema.sql", PackageResources._01_participant_schema_sql),
                Migration("002_participant_seed.sql", PackageResources._02_participant_seed_sql),
                Migration("003_participant_initial_stock.sql", PackageResources._03_participant_initial_stock_sql),
                Migration("004_participant_branch_functions.sql", PackageResources._04_participant_branch_functions_sql),
                Migration("005_participant_retention.sql", PackageResources._05_participant_retention_sql),
                Migration("006_participant_confirm_finalize.sql", PackageResources._06_participant_confirm_finalize_sql),
                Migration(
                    "007_participant_confirm_finalize_one_write.sql", PackageResources._07_participant_confirm_finalize_one_write_sql
                ),
                Migration(
                    "008_participant_prune_takes_no_product_row.sql",
                    PackageResources._08_participant_prune_takes_no_product_row_sql
                ),
                Migration(
                    "009_participant_undo_keeps_first_phase_end.sql",
                    PackageResources._09_participant_undo_keeps_first_phase_end_sql
                ),
                Migration(
                    "010_participant_watermark_from_coordinated_rows.sql",
                    PackageResources._10_participant_watermark_from_coordinated_rows_sql
                ),
                Migration(
                    "011_participant_prune_final_rows_filtered_first.sql",
                    PackageResources._11_participant_prune_final_rows_filtered_first_sql
                ),
                Migration(
                    "012_participant_xa_second_phase_checks_mode.sql",
                    PackageResources._12_participant_xa_second_phase_checks_mode_sql
                ),
            ]
        case .coordinator:
            return [
                Migration("001_coordinator_schema.sql", PackageResources._01_coordinator_schema_sql),
                Migration("002_coordinator_log_functions.sql", PackageResources._02_coordinator_log_functions_sql),
                Migration("003_coordinator_retention.sql", PackageResources._03_coordinator_retention_sql),
                Migration("004_coordinator_log_lock_order.sql", PackageResources._04_coordinator_log_lock_order_sql),
                Migration("005_coordinator_ids_from_the_clock.sql", PackageResources._05_coordinator_ids_from_the_clock_sql),
                Migration("006_coordinator_postpone_saturates.sql", PackageResources._06_coordinator_postpone_saturates_sql),
                Migration("007_coordinator_begin_key_pruned_meanwhile.sql", PackageResources._07_coordinator_begin_key_pruned_meanwhile_sql),
            ]
        }
    }
}

/// Applies the files of a `Schema` that a database has not seen yet, in order, and records them.
///
/// All of it runs in one transaction under a transaction-level advisory lock, so two services that start at the
/// same moment against one database apply each file once: the second waits, then finds them recorded.
public enum Migrator {
    /// Arbitrary but fixed: the advisory lock key that serialises dtx migrations in one database.
    static let advisoryLockKey: Int64 = 0x6474_785f_6d69_67

    /// Returns the versions applied by this call (empty when the database was already up to date).
    @discardableResult
    public static func migrate(_ schema: Schema, connection: PostgresConnection, logger: Logger) async throws -> [String] {
        try await connection.transaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.advisoryLockKey))", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    text PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """,
                logger: logger
            )
            var applied: Set<String> = []
            for try await version in try await connection.query("SELECT version FROM schema_migrations", logger: logger).decode(String.self) {
                applied.insert(version)
            }
            var appliedNow: [String] = []
            for migration in schema.migrations where !applied.contains(migration.version) {
                for statement in SQLScript.statements(in: migration.sql) {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO schema_migrations (version) VALUES (\(migration.version))", logger: logger)
                logger.info("applied migration", metadata: ["dtx.migration": "\(migration.version)"])
                appliedNow.append(migration.version)
            }
            return appliedNow
        }
    }
}

/// Splits a SQL script into statements for the extended protocol, which takes one statement per query.
///
/// Knows what psql knows about where a statement ends: `;` outside quotes, `--` and `/* */` comments, and
/// dollar quoting (`$$ ... $$`, `$tag$ ... $tag$`).
public enum SQLScript {
    public static func statements(in script: String) -> [String] {
        var statements: [String] = []
        var current = ""
        var hasCode = false
        let chars = Array(script)
        var i = 0
        func flush() {
            let trimmed = current.trimmingCharacters(in: .whitespacesAndNewlines)
            if hasCode && !trimmed.isEmpty { statements.append(trimmed) }
            current = ""
            hasCode = false
        }
        while i < chars.count {
            let c = chars[i]
            let next: Character? = i + 1 < chars.count ? chars[i + 1] : nil
            if c == "-" && next == "-" {
                while i < chars.count && chars[i] != "\n" { i += 1 }
                continue
            }
            if c == "/" && next == "*" {
                i += 2
                while i + 1 < chars.count && !(chars[i] == "*" && chars[i + 1] == "/") { i += 1 }
                i += 2
                continue
            }
            if c == "'" || c == "\"" {
                var j = i + 1
                while j < chars.count {
                    if chars[j] == c {
                        if j + 1 < chars.count && chars[j + 1] == c { j += 2; continue }
                        break
                    }
                    j += 1
                }
                current += String(chars[i...min(j, chars.count - 1)])
                hasCode = true
                i = j + 1
                continue
            }
            if c == "$", let tagEnd = Self.dollarTagEnd(chars, from: i) {
                let tag = String(chars[i...tagEnd])
                var j = tagEnd + 1
                var closed = false
                while j < chars.count {
                    if chars[j] == "$" && String(chars[j..<min(j + tag.count, chars.count)]) == tag {
                        closed = true
                        break
                    }
                    j += 1
                }
                let end = closed ? j + tag.count : chars.count
                current += String(chars[i..<end])
                hasCode = true
                i = end
                continue
            }
            if c == ";" {
                flush()
                i += 1
                continue
            }
            current.append(c)
            if !c.isWhitespace { hasCode = true }
            i += 1
        }
        flush()
        return statements
    }

    /// `$tag$` or `$$` starting at `start`: the index of the closing `$` of the tag.
    private static func dollarTagEnd(_ chars: [Character], from start: Int) -> Int? {
        var j = start + 1
        while j < chars.count {
            let c = chars[j]
            if c == "$" { return j }
            guard c.isLetter || c == "_" || (c.isNumber && j > start + 1) else { return nil }
            j += 1
        }
        return nil
    }
}
