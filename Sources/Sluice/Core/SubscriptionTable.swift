//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// A few values keyed by subscription, searched linearly.
///
/// A stage has a handful of subscriptions; looking one up for every batch in a small array is
/// cheaper than hashing into a dictionary.
@usableFromInline
struct SubscriptionTable<Value>: Sequence, ExpressibleByDictionaryLiteral {
    @usableFromInline var keys: [SubscriptionID] = []
    @usableFromInline var storage: [Value] = []

    @inlinable
    init() {}

    @inlinable
    init(dictionaryLiteral elements: (SubscriptionID, Value)...) {
        for (key, value) in elements { self[key] = value }
    }

    @inlinable
    var count: Int { self.keys.count }

    @inlinable
    var values: [Value] { self.storage }

    @inlinable
    func index(of key: SubscriptionID) -> Int? {
        for index in self.keys.indices where self.keys[index] == key { return index }
        return nil
    }

    @inlinable
    subscript(key: SubscriptionID) -> Value? {
        get {
            guard let index = self.index(of: key) else { return nil }
            return self.storage[index]
        }
        set {
            if let index = self.index(of: key) {
                if let newValue {
                    self.storage[index] = newValue
                } else {
                    self.keys.remove(at: index)
                    self.storage.remove(at: index)
                }
            } else if let newValue {
                self.keys.append(key)
                self.storage.append(newValue)
            }
        }
    }

    @inlinable
    @discardableResult
    mutating func removeValue(forKey key: SubscriptionID) -> Value? {
        guard let index = self.index(of: key) else { return nil }
        self.keys.remove(at: index)
        return self.storage.remove(at: index)
    }

    @inlinable
    func makeIterator() -> Zip2Sequence<[SubscriptionID], [Value]>.Iterator {
        zip(self.keys, self.storage).makeIterator()
    }
}
