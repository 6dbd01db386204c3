// swift-tools-version:6.1
//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import PackageDescription

let package = Package(
    name: "sluice",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Sluice", targets: ["Sluice"]),
        .library(name: "SluiceTestKit", targets: ["SluiceTestKit"]),
        .executable(name: "sluice", targets: ["sluice"]),
        .library(name: "SluiceRedis", targets: ["SluiceRedis"]),
        .library(name: "SluiceRabbitMQ", targets: ["SluiceRabbitMQ"]),
        .library(name: "SluiceKafka", targets: ["SluiceKafka"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // MARK: Engine
        .target(
            name: "Sluice",
            dependencies: [
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "SluiceTests",
            dependencies: [
                "Sluice",
                "SluiceTestKit",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
            ]
        ),
        .target(
            name: "SluiceTestKit",
            dependencies: ["Sluice", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "SluicePipelineTests",
            dependencies: [
                "Sluice",
                "SluiceTestKit",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // MARK: Connectors (package-internal pieces every broker adapter shares)
        .target(
            name: "SluiceConnector",
            dependencies: [
                "Sluice",
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .testTarget(name: "SluiceConnectorTests", dependencies: ["Sluice", "SluiceConnector"]),

        // MARK: Benchmarks
        .executableTarget(
            name: "sluice-bench",
            dependencies: ["Sluice", "SluiceTestKit", "SluiceRedis", "SluiceRabbitMQ", "SluiceKafka", "CRedisRawLoops", .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/sluice-bench"
        ),
        // The raw baselines of `sluice-bench redis`: plain hiredis loops in C.
        .target(name: "CRedisRawLoops", path: "Benchmarks/CRedisRawLoops", linkerSettings: [.linkedLibrary("hiredis")]),

        // MARK: Command-line tool
        .executableTarget(
            name: "sluice",
            dependencies: [
                "Sluice",
                "SluiceConnector",
                "SluiceRedis",
                "SluiceRabbitMQ",
                "SluiceKafka",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        .testTarget(name: "SluiceCLITests", dependencies: ["sluice", "SluiceRabbitMQ", .product(name: "Logging", package: "swift-log")]),

        // MARK: Examples
        .executableTarget(name: "ExampleABC", dependencies: ["Sluice"], path: "examples/abc"),
        .executableTarget(name: "ExampleEventManager", dependencies: ["Sluice"], path: "examples/event-manager"),
        .executableTarget(name: "ExamplePipeline", dependencies: ["Sluice", "SluiceTestKit"], path: "examples/pipeline"),

        // MARK: Brokers (C modules and smoke tests are added below this line by the brokers work)
        .systemLibrary(
            name: "CKafka",
            path: "CKafka",
            pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev"]), .brew(["librdkafka"])]
        ),
        .systemLibrary(
            name: "CRabbit",
            path: "CRabbit",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"]), .brew(["rabbitmq-c"])]
        ),
        .systemLibrary(
            name: "CRedis",
            path: "CRedis",
            // hiredis.pc carries -D_FILE_OFFSET_BITS=64, which SwiftPM drops with a warning on
            // every build. Linux installs hiredis on the default search paths, so only other
            // platforms (Homebrew) need to read hiredis.pc.
            pkgConfig: { () -> String? in
                #if os(Linux)
                return nil
                #else
                return "hiredis"
                #endif
            }(),
            providers: [.apt(["libhiredis-dev"]), .brew(["hiredis"])]
        ),
        // Smoke tests of each broker through its C module, one target per broker, so that
        // Redis-only work needs only the hiredis headers.
        .target(name: "BrokerSmokeSupport", path: "Tests/BrokerSmokeSupport"),
        .testTarget(name: "RedisBrokerSmokeTests", dependencies: ["BrokerSmokeSupport", "CRedis"]),
        .testTarget(name: "RabbitMQBrokerSmokeTests", dependencies: ["BrokerSmokeSupport", "CRabbit"]),
        .testTarget(name: "KafkaBrokerSmokeTests", dependencies: ["BrokerSmokeSupport", "CKafka"]),

        // MARK: Redis
        .target(
            name: "SluiceRedis",
            dependencies: [
                "Sluice",
                "SluiceConnector",
                "CRedis",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "SluiceRedisTests",
            dependencies: [
                "Sluice",
                "SluiceRedis",
                "SluiceTestKit",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),

        // MARK: RabbitMQ
        .target(
            name: "SluiceRabbitMQ",
            dependencies: [
                "Sluice",
                "SluiceConnector",
                "CRabbit",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "SluiceRabbitMQTests",
            dependencies: [
                "Sluice",
                "SluiceRabbitMQ",
                "SluiceTestKit",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
    ]
)

// MARK: Kafka
package.targets += [
    .target(
        name: "SluiceKafka",
        dependencies: [
            "Sluice",
            "SluiceConnector",
            "CKafka",
            .product(name: "DequeModule", package: "swift-collections"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]
    ),
    .testTarget(
        name: "SluiceKafkaTests",
        dependencies: [
            "Sluice",
            "SluiceKafka",
            "SluiceTestKit",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
        ]
    ),
]

// One settings loop for every non-system target: Swift 6 language mode comes from the tools
// version; complete strict concurrency and import hygiene are stated explicitly.
for target in package.targets {
    switch target.type {
    case .regular, .test, .executable:
        var settings = target.swiftSettings ?? []
        settings.append(.enableExperimentalFeature("StrictConcurrency=complete"))
        settings.append(.enableUpcomingFeature("MemberImportVisibility"))
        settings.append(.enableUpcomingFeature("ExistentialAny"))
        settings.append(.enableUpcomingFeature("NonisolatedNonsendingByDefault"))
        settings.append(.enableUpcomingFeature("InternalImportsByDefault"))
        target.swiftSettings = settings
    default:
        break
    }
}
