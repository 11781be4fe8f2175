// The pgn error hierarchy: one class per pgn_deploy.contract.PGNError subclass, same messages.
#pragma once

#include <stdexcept>
#include <string>

#include "pgn/export.hpp"

namespace pgn {

/// Base of every error the library throws on purpose (PGNError): one clear line of text.
class PGN_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An argument, file or array the caller gave is wrong (shape, dtype, value, path).
class PGN_API BadInputError : public Error {
 public:
  using Error::Error;
};

/// A model file is missing, truncated, corrupt or of an unknown kind.
class PGN_API ModelLoadError : public BadInputError {
 public:
  using BadInputError::BadInputError;
};

/// The model is valid but cannot be used (for example an output the metadata names is absent).
class PGN_API UnsupportedModelError : public Error {
 public:
  using Error::Error;
};

/// An ONNX model carries no (or unreadable) pgn_deploy metadata: it was not made by pgn-export.
class PGN_API MissingMetadataError : public Error {
 public:
  using Error::Error;
};

/// A backend needs a library or hardware that is not present (the message names it).
class PGN_API BackendUnavailableError : public Error {
 public:
  using Error::Error;
};

}  // namespace pgn
