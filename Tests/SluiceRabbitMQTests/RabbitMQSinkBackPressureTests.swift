//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Logging
import Sluice
import SluiceRabbitMQ
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A relay in front of the broker (a Python child): plain TCP, or TLS towards the client
/// (``TLSFrontEnd``); it holds back what the broker sends (its confirms) while a file `hold`
/// exists in its folder, and what the client sends still reaches the broker.
final class BrokerRelay: Sendable {
    let directory: URL
    let port: Int
    private let process: Process

    /// Starts a relay to `upstreamPort` in `directory` (a new folder if `nil`; removed by
    /// ``stop()``). `tls`: the listener's certificate and key, and a CA whose signature it
    /// requires of client certificates; empty: plain TCP.
    init(upstreamPort: Int, directory: URL? = nil, tls: [String] = []) throws {
        let directory = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("sluice-relay-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        self.directory = directory
        let script = directory.appendingPathComponent("relay.py")
        try Self.script.write(to: script, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [script.path, "\(upstreamPort)", directory.path] + tls
        process.standardOutput = Pipe()
        process.standardError = Pipe()
        try process.run()
        self.process = process
        var port: Int?
        for _ in 0..<500 where port == nil {
            port = (try? String(contentsOf: directory.appendingPathComponent("port"), encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if port == nil { usleep(10_000) }
        }
        guard let port else {
            kill(process.processIdentifier, SIGKILL)
            throw TestFailure("the relay did not start listening within 5 s")
        }
        self.port = port
    }

    /// Holds back (or lets through again) what the broker sends.
    func hold(_ holding: Bool) throws {
        let file = self.directory.appendingPathComponent("hold")
        if holding {
            try Data().write(to: file)
        } else {
            try FileManager.default.removeItem(at: file)
        }
    }

    /// Kills the relay and removes its folder; waiting for its exit happens on a thread of its
    /// own, never on the cooperative pool.
    func stop() async {
        // The relay is this test's own child; SIGTERM does not reach it through Foundation's
        // spawn (its signal mask), so it is killed outright.
        kill(self.process.processIdentifier, SIGKILL)
        let process = self.process
        _ = try? await offPool { process.waitUntilExit() }
        try? FileManager.default.removeItem(at: self.directory)
    }

    private static let script = """
        import asyncio, os, ssl, sys

        upstream, folder, tls = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
        hold = os.path.join(folder, "hold")

        async def pipe(reader, writer, holdable):
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    while holdable and os.path.exists(hold):
                        await asyncio.sleep(0.01)
                    writer.write(data)
                    await writer.drain()
            except Exception:
                pass
            finally:
                try:
                    writer.close()
                except Exception:
                    pass

        async def handle(reader, writer):
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
            except Exception:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

        async def main():
            context = None
            if tls:
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(tls[0], tls[1])
                if len(tls) > 2:
                    # verify_peer with fail_if_no_peer_cert: no certificate the CA signed, no session.
                    context.verify_mode = ssl.CERT_REQUIRED
                    context.load_verify_locations(tls[2])
            server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
            with open(os.path.join(folder, "port.tmp"), "w") as f:
                f.write(str(server.sockets[0].getsockname()[1]))
            os.rename(os.path.join(folder, "port.tmp"), os.path.join(folder, "port"))
            async with server:
                await server.serve_forever()

        asyncio.run(main())
        """
}

/// A producer of `total` payloads that records every demand it receives and how many it had
/// emitted before it.
struct DemandRecordingProducer: Producer {
    typealias Output = [UInt8]
    final class Log: Sendable {
        let asks = Mutex<[(demand: Int, emittedBefore: Int)]>([])
    }

    let total: Int
    let log: Log
    private var emitted = 0

    init(total: Int, log: Log) {
        self.total = total
        self.log = log
    }

    mutating func handleDemand(_ demand: Int, context: inout StageContext<[UInt8]>) {
        let emitted = self.emitted
        self.log.asks.withLock { $0.append((demand, emitted)) }
        let count = min(demand, self.total - self.emitted)
        context.emit((self.emitted..<self.emitted + count).map { Array("held-\($0)".utf8) })
        self.emitted += count
        if self.emitted == self.total { context.stop(.normal) }
    }
}

@Suite("RabbitMQ sink back-pressure", .timeLimit(.minutes(1)))
struct RabbitMQSinkBackPressureTests {
    let logger = Logger(label: "sluice.test.amqp.sink-pressure")

    /// While the broker's confirms are held back (by a relay between the sink and the broker),
    /// the sink stage asks its producer for nothing more than its first demand; once they flow
    /// again, everything arrives.
    @Test func theSinkStageAsksForMoreOnlyOnceItsBatchWasConfirmed() async throws {
        let configuration = try RabbitTestEnvironment.configuration("sink-pressure")
        let queue = configuration.queue
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        let upstream = configuration.port
        let relay = try await offPool { try BrokerRelay(upstreamPort: upstream) }
        try await withStopping(relay, stop: { await $0.stop() }) { relay in
            var relayed = configuration
            relayed.port = relay.port
            let sink = try RabbitMQSink(configuration: relayed, logger: self.logger)
            try await sink.connect()
            try relay.hold(true)
            let log = DemandRecordingProducer.Log()
            let producer = try await StageHandle.start(
                DemandRecordingProducer(total: 500, log: log),
                options: StageOptions(name: "held", logger: self.logger)
            )
            let consumer = try await StageHandle.start(
                RabbitMQSinkStage(sink: sink),
                options: StageOptions(name: "sink", logger: self.logger),
                subscribeTo: [SubscribeTo(producer, options: SubscriptionOptions(maxDemand: 100))]
            )
            // The publishes reach the broker (the relay passes what the client sends), their
            // confirms do not come back.
            try await waitUntil("the first batch at the broker") { try await client.readyCount(queue) > 0 }
            try await Task.sleep(for: .milliseconds(500))
            let held = log.asks.withLock { $0 }
            #expect(held.count == 1, "asked again without a confirm: \(held)")
            #expect(held.first?.demand == 100, "\(held)")

            try relay.hold(false)
            _ = await consumer.waitForTermination()
            #expect(try await client.readyCount(queue) == 500)
            let asks = log.asks.withLock { $0 }
            #expect(asks.count > 1 && asks.map(\.demand).reduce(0, +) >= 500, "\(asks)")
            await sink.close()
        }
        try await client.delete(queue: configuration.queue)
        await client.close()
    }
}
