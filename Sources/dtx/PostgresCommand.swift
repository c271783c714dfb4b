import ArgumentParser
import DTXPostgres
import Logging

struct PostgresCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postgres",
        abstract: "A throwaway PostgreSQL cluster in a private folder (initdb + pg_ctl), for trying dtx without a server.",
        subcommands: [Start.self, Stop.self, Status.self]
    )

    struct Location: ParsableArguments {
        @Option(help: "The cluster's folder.") var dir: String = ".dtx/postgres"
        @Option(help: """
            1: one server with the three databases; 3: a server per part (coordinator, service_a, service_b), in \
            subfolders (default: 3 when the folder holds those, else 1).
            """)
        var servers: Int?

        func validate() throws {
            guard servers == nil || servers == 1 || servers == 3 else { throw ValidationError("--servers is 1 or 3") }
        }

        /// The number of servers: as given, else what the folder holds (stop, status and verify find a trio by itself).
        var count: Int { servers ?? (ServerTrio.holdsServers(in: dir) ? 3 : 1) }

        var trio: ServerTrio? { get throws { count == 3 ? try ServerTrio(directory: dir) : nil } }
    }

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create (or reuse) and start the cluster, create dtx_service_a, dtx_service_b and dtx_coordinator, print their URLs."
        )
        @OptionGroup var location: Location
        @Option(help: "TCP port (default: the last one used in this folder, else a free one).") var port: Int?
        @Option(help: "max_prepared_transactions (0 turns two-phase commit off, as PostgreSQL's default does).")
        var maxPreparedTransactions: Int = 200

        func run() async throws {
            var logger = Logger(label: "dtx.postgres")
            logger.logLevel = .warning
            if location.count == 3 {
                guard port == nil else { throw ValidationError("--port is for one server; three pick free ports") }
                let trio = try ServerTrio(directory: location.dir) { $0.maxPreparedTransactions = maxPreparedTransactions }
                try await trio.start(logger: logger)
                for line in trio.statusLines() { print("PostgreSQL \(line)") }
                for part in ServerTrio.Part.allCases { print("\(part.database)\t\(try trio.url(part).urlString)") }
                return
            }
            var configuration = EmbeddedPostgres.Configuration(directory: location.dir, port: port)
            configuration.maxPreparedTransactions = maxPreparedTransactions
            let cluster = try EmbeddedPostgres(configuration: configuration)
            try await cluster.start(logger: logger)
            print("PostgreSQL \(cluster.statusLine())")
            for database in EmbeddedPostgres.serviceDatabases {
                print("\(database)\t\(try cluster.url(database: database).urlString)")
            }
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the cluster (its folder stays; start reuses it).")
        @OptionGroup var location: Location
        @Flag(help: "Also delete the folder.") var remove = false

        func run() async throws {
            if let trio = try location.trio {
                if remove {
                    try trio.destroy()
                    print("stopped and removed \(location.dir)")
                } else {
                    try trio.stop()
                    for line in trio.statusLines() { print("PostgreSQL \(line)") }
                }
                return
            }
            let cluster = try EmbeddedPostgres(configuration: .init(directory: location.dir))
            if remove {
                try cluster.destroy()
                print("stopped and removed \(location.dir)")
            } else {
                try cluster.stop()
                print("PostgreSQL \(cluster.statusLine())")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Say whether the cluster runs, where, and on which port.")
        @OptionGroup var location: Location

        func run() async throws {
            if let trio = try location.trio {
                for line in trio.statusLines() { print("PostgreSQL \(line)") }
                guard trio.clusters.values.allSatisfy({ $0.isRunning() }) else { throw ExitCode(3) }
                for part in ServerTrio.Part.allCases { print("\(part.database)\t\(try trio.url(part).urlString)") }
                return
            }
            let cluster = try EmbeddedPostgres(configuration: .init(directory: location.dir))
            print("PostgreSQL \(cluster.statusLine())")
            if cluster.isRunning() {
                for database in EmbeddedPostgres.serviceDatabases {
                    print("\(database)\t\(try cluster.url(database: database).urlString)")
                }
            } else {
                throw ExitCode(3)
            }
        }
    }
}
