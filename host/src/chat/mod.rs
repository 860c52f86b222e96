//! Chat: Remedy as a participant in the incident channel. Plans are posted
//! where the on-call engineer already is, with buttons bound to the plan;
//! decisions made there go through the same store decision as the
//! console's, the CLI's and the API's.

pub mod slack;

pub use slack::Slack;
