// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "dtx",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "dtx", targets: ["dtx"]),
        .library(name: "DTXParticipant", targets: ["DTXParticipant"]),
        .library(name: "DTXCoordinator", targets: ["DTXCoordinator"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        // NIOHTTPTypes only (already built for Hummingbird): the HTTP parts a channel handler of the servers sees
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
    ],
    targets: [
        // Wire types, ids, states and errors. No I/O.
        .target(name: "DTXProtocol"),
        // Connection settings, migrations from sql/, the embedded cluster, SQLSTATE helpers.
        .target(
            name: "DTXPostgres",
            dependencies: [
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [
                .embedInCode("SQL/participant/001_participant_schema.sql"),
                .embedInCode("SQL/participant/002_participant_seed.sql"),
                .embedInCode("SQL/participant/003_participant_initial_stock.sql"),
                .embedInCode("SQL/participant/004_participant_branch_functions.sql"),
                .embedInCode("SQL/participant/005_participant_retention.sql"),
                .embedInCode("SQL/participant/006_participant_confirm_finalize.sql"),
                .embedInCode("SQL/participant/007_participant_confirm_finalize_one_write.sql"),
                .embedInCode("SQL/participant/008_participant_prune_takes_no_product_row.sql"),
                .embedInCode("SQL/participant/009_participant_undo_keeps_first_phase_end.sql"),
                .embedInCode("SQL/participant/010_participant_watermark_from_coordinated_rows.sql"),
                .embedInCode("SQL/participant/011_participant_prune_final_rows_filtered_first.sql"),
                .embedInCode("SQL/participant/012_participant_xa_second_phase_checks_mode.sql"),
                .embedInCode("SQL/coordinator/001_coordinator_schema.sql"),
                .embedInCode("SQL/coordinator/002_coordinator_log_functions.sql"),
                .embedInCode("SQL/coordinator/003_coordinator_retention.sql"),
                .embedInCode("SQL/coordinator/004_coordinator_log_lock_order.sql"),
                .embedInCode("SQL/coordinator/005_coordinator_ids_from_the_clock.sql"),
                .embedInCode("SQL/coordinator/006_coordinator_postpone_saturates.sql"),
                .embedInCode("SQL/coordinator/007_coordinator_begin_key_pruned_meanwhile.sql"),
            ]
        ),
        // What every dtx HTTP service shares: JSON errors, bearer token, metrics, the branch HTTP client.
        .target(
            name: "DTXHTTP",
            dependencies: [
                "DTXProtocol", "DTXPostgres",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "DTXParticipant",
            dependencies: [
                "DTXProtocol", "DTXPostgres", "DTXHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.embedInCode("openapi.json")]
        ),
        .target(
            name: "DTXCoordinator",
            dependencies: [
                "DTXProtocol", "DTXPostgres", "DTXHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Mustache", package: "swift-mustache"),
            ],
            resources: [
                .embedInCode("openapi.json"),
                .embedInCode("StatusPage/layout.mustache"),
                .embedInCode("StatusPage/transactions.mustache"),
                .embedInCode("StatusPage/transaction.mustache"),
                .embedInCode("StatusPage/message.mustache"),
            ]
        ),
        .target(
            name: "DTXBench",
            dependencies: [
                "DTXProtocol", "DTXPostgres", "DTXHTTP",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "dtx",
            dependencies: [
                "DTXProtocol", "DTXPostgres", "DTXParticipant", "DTXCoordinator", "DTXBench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "DTXTests",
            dependencies: [
                "DTXProtocol", "DTXPostgres", "DTXHTTP", "DTXParticipant", "DTXCoordinator", "DTXBench",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
    ]
)
