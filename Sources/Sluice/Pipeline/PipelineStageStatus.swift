//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization

/// A running stage whose ``StageStatus`` can be read without knowing the stage's type.
protocol StageStatusReporting: Sendable {
    /// The stage's status, read in order with its other mail.
    func status() async throws -> StageStatus
}

extension StageHandle: StageStatusReporting {}

extension Pipeline {
    /// The status of every stage of the current run, in pipeline order: the source, the
    /// processors, then each batcher followed by its batch processors.
    ///
    /// Empty before the run has started its stages and after it ended; a stage that ends
    /// while being asked is left out. The stages are asked all at once, and each answers in
    /// order with its other mail, so a stage busy in a long callback answers (and this
    /// returns) once that callback returned. Meant for monitoring, such as the pending demand
    /// per stage of a live status display.
    public func stageStatuses() async -> [StageStatus] {
        let stages = self.running.withLock { $0.current?.stages ?? [] }
        let reporters = stages.compactMap { $0.handle as? any StageStatusReporting }
        return await withTaskGroup(of: (Int, StageStatus?).self) { group in
            for (index, reporter) in reporters.enumerated() {
                group.addTask { (index, try? await reporter.status()) }
            }
            var statuses = [StageStatus?](repeating: nil, count: reporters.count)
            for await (index, status) in group { statuses[index] = status }
            return statuses.compactMap { $0 }
        }
    }
}
