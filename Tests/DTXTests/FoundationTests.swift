import DTXBench
import DTXPostgres
import DTXProtocol
import Foundation
import NIOCore
import NIOPosix
import PostgresNIO
import Testing

@Suite("Schema, migrations, URLs")
struct FoundationTests {
    @Test("dtx postgres start --servers 3: status and stop --remove find the three servers by the folder alone")
    func trioFoundByFolder() async throws {
        let dir = "/tmp/dtx-test-\(getpid())-trio"
        func dtx(_ arguments: [String], _ name: String) async throws -> (Int32?, String) {
            let process = try ChildProcess.spawn(name: name, executable: try dtxExecutable(), arguments: arguments, logPath: "\(dir)-\(name).log")
            let status = await process.wait(timeout: .seconds(120))
            return (status, process.logTail(lines: 20))
        }
        let (started, startLog) = try await dtx(["postgres", "start", "--servers", "3", "--dir", dir], "start")
        #expect(started == 0, "\(startLog)")
        // before, without --servers 3 these looked for one server in the folder: "no cluster", and stop --remove
        // deleted the folder under three running servers
        let (status, statusLog) = try await dtx(["postgres", "status", "--dir", dir], "status")
        #expect(status == 0 && statusLog.contains("dtx_service_b\t"), "\(statusLog)")
        let (stopped, stopLog) = try await dtx(["postgres", "stop", "--remove", "--dir", dir], "stop")
        #expect(stopped == 0, "\(stopLog)")
        #expect(!FileManager.default.fileExists(atPath: dir))
        let running = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.contains { entry in
            guard Int32(entry) != nil, let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return false }
            return String(decoding: data, as: UTF8.self).contains(dir + "/")
        } ?? false
        #expect(!running, "a server of \(dir) still runs")
    }

    @Test("migrations apply twice, also from two connections at once, each file once")
    func migrationsTwice() async throws {
        for schema in Schema.allCases {
            let database = try await TestPostgres.shared.newDatabase("migrate")
            async let first = withDatabase(database) { try await Migrator.migrate(schema, connection: $0, logger: TestPostgres.logger) }
            async let second = withDatabase(database) { try await Migrator.migrate(schema, connection: $0, logger: TestPostgres.logger) }
            let (a, b) = try await (first, second)
            #expect(a.count + b.count == schema.migrations.count, "each file applied exactly once")
            let again = try await withDatabase(database) { try await Migrator.migrate(schema, connection: $0, logger: TestPostgres.logger) }
            #expect(again.isEmpty)
            #expect(try await scalar(database, "SELECT count(*) FROM schema_migrations") == Int64(schema.migrations.count))
        }
    }

    @Test("participant schema: documented tables, status words, seed data, stock never negative")
    func participantSchema() async throws {
        let database = try await TestPostgres.shared.newDatabase("schema")
        _ = try await withDatabase(database) { connection in
            try await Migrator.migrate(.participant, connection: connection, logger: TestPostgres.logger)
        }
        #expect(try await scalar(database, "SELECT stock FROM products WHERE name = 'ProductA'") == 100)
        #expect(try await scalar(database, "SELECT stock FROM products WHERE name = 'ProductB'") == 200)
        for status in ["try", "confirm_pending", "confirm", "cancel", "compensated"] {
            #expect(try await scalar(database, """
                WITH r AS (INSERT INTO transactions (service, product_id, quantity, status, worker_event_id, mode)
                VALUES ('ServiceA', 1, 1, \(status), (random() * 1e9)::bigint, 'tcc') RETURNING 1) SELECT count(*) FROM r
                """) == 1, "\(status)")
        }
        await #expect(throws: (any Error).self, "an unknown status word") {
            _ = try await scalar(database, "INSERT INTO transactions (service, product_id, quantity, status, worker_event_id, mode) VALUES ('ServiceA', 1, 1, 'done', 5, 'tcc') RETURNING id")
        }
        do {
            _ = try await scalar(database, "UPDATE products SET stock = -1 WHERE id = 1 RETURNING stock")
            Issue.record("negative stock was accepted")
        } catch {
            #expect(error.sqlState == SQLState.checkViolation.rawValue)
        }
        #expect(try await scalar(database, "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('products', 'transactions', 'barrier')") == 3)
    }

    @Test("coordinator schema: worker_events takes every documented status, compensated included")
    func coordinatorSchema() async throws {
        let database = try await TestPostgres.shared.newDatabase("schema")
        _ = try await withDatabase(database) { connection in
            try await Migrator.migrate(.coordinator, connection: connection, logger: TestPostgres.logger)
        }
        for (id, status) in ["pending", "completed", "failed", "compensated"].enumerated() {
            #expect(try await scalar(database, """
                WITH r AS (INSERT INTO worker_events (id, status, mode, phase, request, branches, deadline_at)
                VALUES (\(id + 1), \(status), 'saga', 'compensate', '{}', '[]', now()) RETURNING 1) SELECT count(*) FROM r
                """) == 1, "\(status)")
        }
        await #expect(throws: (any Error).self) {
            _ = try await scalar(database, "INSERT INTO worker_events (id, status, mode, phase, request, branches, deadline_at) VALUES (9, 'done', 'saga', 'reserve', '{}', '[]', now()) RETURNING id")
        }
        // the one definition of open: pending, or a Saga failed while it compensates
        #expect(try await scalar(database, "SELECT count(*) FROM worker_events WHERE open") == 2)
    }

    @Test("the sql/ files apply with psql -v ON_ERROR_STOP=1 -f, twice")
    func psqlApplies() async throws {
        guard Command.which("psql") != nil else { return }  // the client is optional on a machine; CI has it
        let database = try await TestPostgres.shared.newDatabase("psql")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for file in ["participant/001_participant_schema.sql", "participant/002_participant_seed.sql", "participant/003_participant_initial_stock.sql"] {
            for _ in 0..<2 {
                try Command.run(["psql", "-v", "ON_ERROR_STOP=1", "-q", "-d", database.urlString, "-f", root.appendingPathComponent("sql/\(file)").path])
            }
        }
        #expect(try await scalar(database, "SELECT count(*) FROM products") == 2)
    }

    @Test("database URLs: the accepted forms, and a one-line reason for a bad one")
    func urls() throws {
        let tcp = try DatabaseURL("postgres://app:p%40ss@db.example:6543/stock?sslmode=require")
        #expect(tcp.endpoint == .tcp(host: "db.example", port: 6543))
        #expect(tcp.username == "app")
        #expect(tcp.password == "p@ss")
        #expect(tcp.database == "stock")
        #expect(tcp.sslMode == .require)
        #expect(!tcp.description.contains("p@ss"))
        let socket = try DatabaseURL("postgresql://postgres@/dtx_service_a?host=/var/run/postgresql")
        #expect(socket.endpoint == .unixSocket(path: "/var/run/postgresql/.s.PGSQL.5432"))
        #expect(try DatabaseURL(socket.urlString) == socket)
        #expect(try DatabaseURL("postgres://u@[::1]/d").endpoint == .tcp(host: "::1", port: 5432))
        for (bad, reason) in [
            ("mysql://u@h/d", "scheme"), ("postgres://u@h:99999/d", "port"), ("postgres://u@h:5432", "database name is missing"),
            ("localhost:5432/d", "postgres://"), ("postgres://u@h/d?sslmode=maybe", "sslmode"),
        ] {
            #expect(throws: DatabaseURLError.self) { try DatabaseURL(bad) }
            do { _ = try DatabaseURL(bad) } catch { #expect("\(error)".contains(reason), "\(bad): \(error)") ; #expect(!"\(error)".contains("\n")) }
        }
        // a refused URL is shown without its password (before, it went to stderr and the journal as given)
        for bad in [
            "postgres://app:S3cret@db:5432/dtx?sslmode=verify-full", "postgres://app:S3c@ret@db:99999/dtx", "postgres://app:S3cret@db/",
            "postgres://app:S3c/ret==@db/dtx", "postgres://app@db/dtx?password=S3cret&sslmode=verify-full", "host=db user=app password=S3cret",
        ] {
            do {
                _ = try DatabaseURL(bad)
                Issue.record("\(bad) accepted")
            } catch {
                #expect(!"\(error)".contains("S3c") && "\(error)".contains("***"), "\(error)")
            }
        }
    }

    @Test("every session dtx opens commits durably, even on a database whose default is synchronous_commit = off")
    func sessionsAreDurable() async throws {
        let url = try await TestPostgres.shared.newDatabase("durable")
        try await withDatabase(url) { _ = try await $0.query(PostgresQuery(unsafeSQL: "ALTER DATABASE \(url.database) SET synchronous_commit = off"), logger: TestPostgres.logger) }
        func setting(_ connection: PostgresConnection) async throws -> String {
            for try await value in try await connection.query("SELECT current_setting('synchronous_commit')", logger: TestPostgres.logger).decode(String.self) {
                return value
            }
            return "none"
        }
        // a session without dtx's settings gets the database's default
        var plain = try url.connectionConfiguration()
        plain.options.additionalStartupParameters = []
        let other = try await PostgresConnection.connect(configuration: plain, id: 9, logger: TestPostgres.logger)
        #expect(try await setting(other) == "off")
        try await other.close()
        #expect(try await url.withConnection(logger: TestPostgres.logger) { try await setting($0) } == "on")
        let client = PostgresClient(configuration: try url.clientConfiguration(maximumConnections: 1), backgroundLogger: TestPostgres.logger)
        let run = Task { await client.run() }
        #expect(try await client.withConnection { try await setting($0) } == "on")
        run.cancel()
    }

    @Test("log lines name the server's error and its SQLSTATE, not PSQLError's fixed text")
    func logDescription() async throws {
        let database = try await TestPostgres.shared.newDatabase("logtext")
        do {
            _ = try await withDatabase(database) { try await $0.query("SELECT * FROM no_such_table", logger: TestPostgres.logger).count() }
            Issue.record("the query succeeded")
        } catch {
            #expect("\(error)".contains("Generic description"))  // what the log lines showed before
            #expect(error.logDescription.contains("no_such_table") && error.logDescription.contains("SQLSTATE 42P01"), "\(error.logDescription)")
        }
    }

    @Test("an unreachable server gets a one-line message")
    func unreachable() async throws {
        let url = try DatabaseURL("postgres://postgres@127.0.0.1:\(try EmbeddedPostgres.freePort())/nothing")
        do {
            try await url.checkReachable(logger: TestPostgres.logger)
            Issue.record("no error")
        } catch let error as DatabaseUnreachable {
            #expect("\(error)".hasPrefix("cannot use PostgreSQL at postgres://postgres@127.0.0.1:"))
            #expect(!"\(error)".contains("\n"))
        }
    }

    @Test("withDeadline: a call that never ends (as PostgresNIO's lost query) fails at the deadline; one that ends is answered")
    func deadlineEndsLostCalls() async throws {
        // a future nobody completes: what PostgresNIO 1.33 leaves a query with when its connection closed a moment earlier
        let lost = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Int.self)
        let start = ContinuousClock.now
        await #expect(throws: DeadlineExceeded.self) { try await withDeadline(.milliseconds(200)) { try await lost.futureResult.get() } }
        #expect(ContinuousClock.now - start >= .milliseconds(200))
        #expect(try await withDeadline(.seconds(30)) { 42 } == 42)
        lost.succeed(0)  // (a promise must not be left uncompleted)
    }

    @Test("withDeadline: the caller's cancellation ends the wait at once, long before the deadline (a service stopping)")
    func deadlineEndsOnCancellation() async throws {
        let lost = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Int.self)
        // before, a cancelled caller waited for the whole bound (retention's is 10 minutes), and ServiceLifecycle's
        // cancellation limit then stopped the process with a trap
        let call = Task { try await withDeadline(.seconds(600)) { try await lost.futureResult.get() } }
        call.cancel()
        let outcome = try await withDeadline(.seconds(30)) { await call.result }
        #expect(throws: CancellationError.self) { try outcome.get() }
        lost.succeed(0)
    }

    @Test("a spawned program inherits no descriptor but standard input, output and error, and no blocked or ignored signal")
    func spawnedProgramsStartClean() async throws {
        // a listening socket of this process, as SwiftNIO makes them (without close-on-exec)
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        // spawned from a thread of NIO's, which blocks nearly every signal (pgbench's -T never ended from one)
        let listing = try await listener.eventLoop.submit {
            // (the shell's descriptors, then its own mask read by the program it becomes: dash blocks every signal while it
            // waits for a child, so a child reading the shell's mask would see that, not what the shell inherited)
            try Command.run(["/bin/sh", "-c", "ls /proc/$$/fd; exec grep -E '^Sig(Blk|Ign)' /proc/self/status"])
        }.get()
        try await listener.close()
        let lines = listing.split(separator: "\n").map(String.init)
        #expect(Set(lines.filter { !$0.hasPrefix("Sig") }) == ["0", "1", "2"], "the child's descriptors: \(listing)")
        #expect(lines.contains { $0.hasPrefix("SigBlk:") && $0.hasSuffix("0000000000000000") }, "\(listing)")
        // the standard signals 1-31 (bits 0-30); glibc keeps its two internal real-time signals (32, 33) as they were
        let ignored = lines.first { $0.hasPrefix("SigIgn:") }.flatMap { UInt64($0.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16) }
        #expect(ignored.map { $0 & 0x7fff_ffff } == 0, "\(listing)")
    }

    @Test("a JSON object that names a key twice, or a number that is no integer, is a 400 that names the field")
    func duplicateKeys() throws {
        struct Body: Decodable { var a: Int; var b: [Inner]?; var c: String? }
        struct Inner: Decodable { var a: Int }
        let refused: [(String, String)] = [
            (#"{"a": 1, "a": 2}"#, "a"),
            (#"{"a": 1, "b": [{"a": 1, "a": 2}]}"#, "a"),
            (#"{"a": 1, "quantit\u0079": 2, "quantity": 3}"#, "quantity"),  // the same key, escaped
            (#"{"c": "x\"", "c": "y"}"#, "c"),
        ]
        for (text, key) in refused {
            #expect(throws: ProtocolError.badRequest("field '\(key)' is given twice in one object"), "\(text)") {
                _ = try WireJSON.decode(Body.self, from: Data(text.utf8))
            }
        }
        // a number that is valid JSON but no integer of the field's: named (before: "the body is not valid JSON")
        for (text, field) in [(#"{"a": 9223372036854775808}"#, "a"), (#"{"a": 1, "b": [{"a": 1.5}]}"#, "b[0].a"), (#"{"a": 1e30}"#, "a")] {
            #expect(throws: ProtocolError.badRequest("field '\(field)' must be a whole number from -9223372036854775808 to 9223372036854775807"), "\(text)") {
                _ = try WireJSON.decode(Body.self, from: Data(text.utf8))
            }
        }
        #expect(throws: ProtocolError.badRequest("the body is not valid JSON")) { _ = try WireJSON.decode(Body.self, from: Data("{\"a\": ".utf8)) }
        // UTF-16 and UTF-32, which JSONDecoder reads and the scan for repeated keys cannot follow (before: decoded, a = 1)
        let sneaky = #"{"c": "\"", "a": 1, "a": 2}"#
        for encoding: String.Encoding in [.utf16LittleEndian, .utf16BigEndian, .utf16, .utf32LittleEndian] {
            #expect(throws: ProtocolError.badRequest("the body must be JSON in UTF-8"), "\(encoding)") {
                _ = try WireJSON.decode(Body.self, from: sneaky.data(using: encoding)!)
            }
        }
        let accepted = [#"{"a": 1, "b": [{"a": 1}, {"a": 2}], "c": "\"a\": 1, \"a\": 2"}"#, #"{"b": [], "a": 3}"#, #" { "a" : 1 } "#]
        for text in accepted { #expect(throws: Never.self, "\(text)") { _ = try WireJSON.decode(Body.self, from: Data(text.utf8)) } }
    }

    @Test("SQL scripts split like psql: quotes, comments, dollar quoting")
    func scriptSplitter() {
        let script = """
            -- a comment; with a semicolon
            CREATE TABLE a (x text DEFAULT 'a;b');
            /* block; comment */ INSERT INTO a VALUES ('it''s; fine');
            CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;
            CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 2; END; $body$
            """
        let statements = SQLScript.statements(in: script)
        #expect(statements.count == 4)
        #expect(statements[0] == "CREATE TABLE a (x text DEFAULT 'a;b')")
        #expect(statements[2].contains("$$ SELECT 1; $$"))
        #expect(statements[3].hasSuffix("$body$ BEGIN RETURN 2; END; $body$"))
    }
}
