//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
@_spi(Internal) @testable import SluiceRedis
import Testing

/// Hostile and odd URLs: every numeric option has a range and a one-line error outside it,
/// IPv6 literals are read, the URL is echoed at most 200 characters long, no password is ever
/// shown, and 100 000 random and mutated URLs give either a configuration or a typed error.
@Suite("Redis URLs, hostile and odd", .timeLimit(.minutes(2)))
struct RedisURLFuzzTests {
    @Test func everyNumericParameterHasARangeAndAOneLineError() throws {
        for (name, range) in RedisConfiguration.numericParameters {
            let base = "redis://127.0.0.1:6379/0?key=k&"
            // The bounds are accepted (a window of 1 needs max_in_flight_bytes of its own only
            // in combination: each bound alone is valid).
            for value in [range.lowerBound, range.upperBound] {
                #expect(throws: Never.self, "\(name)=\(value)") { _ = try RedisConfiguration(url: base + "\(name)=\(value)") }
            }
            for value in ["\(range.lowerBound - 1)", "\(range.upperBound + 1)", "9223372036854775807", "-9223372036854775808", "1e3", "", "x"] {
                let error = try #require(throws: RedisError.self, "\(name)=\(value)") { try RedisConfiguration(url: base + "\(name)=\(value)") }
                #expect(error.code == .invalidURL)
                #expect(error.message.contains(name) && error.message.contains("from \(range.lowerBound) to \(range.upperBound)"), "\(error.message)")
                #expect(!error.message.contains("\n"))
            }
        }
        let configuration = try RedisConfiguration(url: "redis://h/0?key=k&reap_ms=250&claim_interval_ms=40&max_read_bytes=65536&command_timeout_ms=1500")
        #expect(configuration.reapInterval == .milliseconds(250))
        #expect(configuration.claimInterval == .milliseconds(40))
        #expect(configuration.maxReadBytes == 65536)
        #expect(configuration.commandTimeout == .milliseconds(1500))
        for bad in ["redis://h:0/0?key=k", "redis://h:65536/0?key=k", "redis://h:99999999999999999999/0?key=k", "redis://h/99999999999?key=k", "redis://h/-1?key=k"] {
            #expect(throws: RedisError.self, "\(bad)") { _ = try RedisConfiguration(url: bad) }
        }
    }

    @Test func durationsOutOfRangeAreTypedErrorsNotCrashes() {
        var configuration = RedisConfiguration(key: "k")
        configuration.livenessTTL = .seconds(1_000_000_000)
        #expect(throws: RedisError.self) { try configuration.validate() }
        configuration = RedisConfiguration(key: "k")
        configuration.blockTimeout = .seconds(3600)
        #expect(throws: RedisError.self) { try configuration.validate() }
        configuration = RedisConfiguration(key: "k")
        configuration.limit = 0
        #expect(throws: RedisError.self) { try configuration.validate() }
    }

    @Test func ipv6LiteralsAreRead() throws {
        let configuration = try RedisConfiguration(url: "redis://[::1]:6380/2?key=k")
        #expect(configuration.host == "::1")
        #expect(configuration.port == 6380)
        #expect(configuration.database == 2)
        #expect(try RedisConfiguration(url: "redis://user:pw@[fe80::1]/0?key=k").host == "fe80::1")
    }

    @Test func anInvalidURLIsEchoedAtMostTwoHundredCharacters() throws {
        let error = try #require(throws: RedisError.self) {
            try RedisConfiguration(url: "redis://h/0?key=" + String(repeating: "k", count: 10_000) + "&mode=" + String(repeating: "m", count: 10_000))
        }
        #expect(error.message.count < 500, "\(error.message.count) characters")
        #expect(error.message.contains("characters)"))
    }

    /// Every shape seen to leak a password: a second `password=`, a `dead=password=` value, a
    /// password with `@` or `/` in it, percent-encoded, a parameter name percent-encoded.
    @Test(arguments: [
        "redis://:SECRET@h/0?key=k&mode=wat",
        "redis://user:SECRET@h/0?key=k&bogus=1",
        "redis://h/0?key=k&password=x&password=SECRET",
        "redis://h/0?key=k&password=SECRET&password=x",
        "unix:///s?key=k&password=SECRET&password=SECRET",
        "redis://h/0?key=k&dead=password=SECRET&batch=0",
        "redis://:SEC@RET@h/0?key=k&mode=wat",
        "redis://:SEC/RET@h/0?key=k",
        "redis://:SE%43RET@h/0?key=k&mode=wat",
        "unix:///s?key=k&pass%77ord=SECRET&mode=wat",
        "redis://:SECRET@h:99999999999/0?key=k",
        "redis://:SECRET@[::1/0?key=k",
        "REDIS://:SECRET@h/0?key=k&PASSWORD=SECRET&mode=x",
        // Malformed: the slashes after the scheme missing or too many (issue 13 audit: these
        // were echoed whole in "missing host").
        "redis:/:SECRET@h/0?key=k",
        "redis::SECRET@h/0?key=k",
        "redis:SECRET@h/0?key=k",
        "redis:user:SECRET@h/0?key=k",
        "redis:///:SECRET@h/0?key=k",
        "unix:/:SECRET@/s?key=k",
    ])
    func aPasswordIsNeverShown(url: String) {
        do {
            _ = try RedisConfiguration(url: url)
        } catch {
            for part in ["SECRET", "SEC", "RET@", "SE%43RET"] {
                #expect(!error.message.contains(part), "\(error.message)")
            }
        }
        #expect(!RedisConfiguration.redacting("sluice drain \(url) extra").contains("SECRET"))
    }

    /// Parses 100 000 random and mutated URLs; the first that breaks the rules ends the run.
    static func fuzz() -> (parsed: Int, rejected: Int, failure: String?) {
        var generator = XorShift64Star(seed: 0xF0_22ED)
        let seeds = [
            "redis://alice:pw@127.0.0.1:6379/0?key=jobs&mode=reliable&batch=500&block_ms=100",
            "redis://[::1]:6379/3?key=k&mode=stream&group=g&consumer=c&claim_idle_ms=100&ttl_ms=1000",
            "unix:///var/run/redis.sock?key=q&db=2&mode=list&password=pw&max_in_flight=10",
            "redis://h/0?key=k&max_in_flight_bytes=4096&max_read_bytes=2048&reap_ms=100&dead=d&field=f",
        ]
        let alphabet = Array("redis:/unix?&=@[]:%.0123456789-_keymodbatchpasswordblock_ms~ \u{0}\u{7F}é漢".unicodeScalars)
        var parsed = 0
        var rejected = 0
        for round in 0..<100_000 {
            var text: [Unicode.Scalar]
            if round % 4 == 0 {
                text = (0..<Int(generator.next() % 80)).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            } else {
                text = Array(seeds[Int(generator.next() % UInt64(seeds.count))].unicodeScalars)
                for _ in 0..<Int(generator.next() % 6) + 1 {
                    let index = text.isEmpty ? 0 : Int(generator.next() % UInt64(text.count))
                    switch generator.next() % 5 {
                    case 0 where !text.isEmpty: text.remove(at: index)
                    case 1: text.insert(alphabet[Int(generator.next() % UInt64(alphabet.count))], at: index)
                    case 2 where !text.isEmpty: text[index] = alphabet[Int(generator.next() % UInt64(alphabet.count))]
                    case 3: text.insert(contentsOf: "9223372036854775807".unicodeScalars, at: index)
                    default: text.append(contentsOf: "&batch=\(Int64(bitPattern: generator.next()))".unicodeScalars)
                    }
                }
            }
            var url = ""
            url.unicodeScalars.append(contentsOf: text)
            do {
                let configuration = try RedisConfiguration(url: url)
                try configuration.validate()
                parsed += 1
            } catch {
                rejected += 1
                // The seeds' password is "pw": wherever a mutation left it in credentials or a
                // password= parameter, the message must not show it.
                let leaked = [":pw@", "password=pw"].contains { error.message.contains($0) }
                if error.code != .invalidURL || error.message.contains("\n") || error.message.count > 800 || leaked {
                    return (parsed, rejected, "\(url): \(error)")
                }
            }
        }
        return (parsed, rejected, nil)
    }

    /// 100 000 random and mutated URLs: each either parses or throws a typed, one-line
    /// ``RedisError`` of code `invalidURL` whose URL part is short; none crashes.
    @Test func fuzzedURLsGiveAConfigurationOrATypedError() async {
        // Several seconds of parsing in a debug build: on a thread of its own, so that the
        // other suites keep both of the cooperative pool's threads.
        let (parsed, rejected, failure) = await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: Self.fuzz()) }.start()
        }
        if let failure { Issue.record("\(failure)") }
        #expect(parsed + rejected == 100_000)
        #expect(parsed > 1000 && rejected > 1000, "the mutations reach both sides: \(parsed) parsed, \(rejected) rejected")
    }
}

/// A seeded xorshift64* generator, so that a failing URL can be found again.
struct XorShift64Star: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { self.state = seed == 0 ? 1 : seed }
    mutating func next() -> UInt64 {
        self.state ^= self.state >> 12
        self.state ^= self.state << 25
        self.state ^= self.state >> 27
        return self.state &* 2_685_821_657_736_338_717
    }
}
