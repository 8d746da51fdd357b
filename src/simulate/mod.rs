//! Simulation of lung ultrasound recordings: probe, phantoms, RF through the operator.

pub mod probe;
