//! behavry-scripted-server
