//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation

/// Redaction of secret `name=value` parameters in text meant for output (URLs, error
/// messages, argument-parser usage lines), shared by every connector and the `sluice` tool.
package enum SecretParameters {
    /// `text` with the value of every parameter whose name `isSecret` accepts replaced by
    /// `***`, up to the next `&`, `#` or whitespace.
    ///
    /// A name starts after `?`, `&`, `#` or whitespace and is handed to `isSecret`
    /// percent-decoded and lowercased. A name that is not secret keeps growing across `=`, so
    /// a secret inside another value (`dead=password=…`) is seen as `dead=password`: a
    /// predicate matches the name's end (`hasSuffix`) or its last `=`-separated part.
    package static func redacting(_ text: String, where isSecret: (String) -> Bool) -> String {
        var redacted = ""
        var name = ""
        var skipping = false
        for character in text {
            if skipping {
                guard character == "&" || character == "#" || character.isWhitespace else { continue }
                skipping = false
            }
            redacted.append(character)
            if character == "=" {
                if isSecret((name.removingPercentEncoding ?? name).lowercased()) {
                    redacted += "***"
                    skipping = true
                    name = ""
                } else {
                    name.append(character)
                }
            } else if character == "&" || character == "?" || character == "#" || character.isWhitespace {
                name = ""
            } else {
                name.append(character)
            }
        }
        return redacted
    }
}
