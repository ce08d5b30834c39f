//! A registration as users send it, and the checked form a saga stores.
//!
//! [`RegistrationInput`] mirrors the JSON that applications already send.
//! [`RegistrationInput::validate`] turns it into a [`Registration`]: the
//! e-mail is trimmed and its domain lower-cased, the amount becomes integer
//! minor units, and every rule that a provider would otherwise reject late
//! is checked up front. Nothing is written for an input that fails here.

use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Longest accepted `fullName`, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// Largest accepted payment, in minor units (999,999.99 in the currency).
pub const MAX_AMOUNT_MINOR: u64 = 99_999_999;

/// Currency used when an input names none.
pub const DEFAULT_CURRENCY: &str = "usd";

/// Accepted ISO 4217 currencies and the decimals of their minor unit.
/// Amounts are sent in minor units, so the exponent decides the factor:
/// 5.00 USD is 500, 500 JPY is 500. Three-decimal currencies (KWD, BHD…)
/// are not accepted yet.
pub const CURRENCIES: [(&str, u32); 25] = [
    ("aud", 2),
    ("brl", 2),
    ("cad", 2),
    ("chf", 2),
    ("clp", 0),
    ("cny", 2),
    ("czk", 2),
    ("dkk", 2),
    ("eur", 2),
    ("gbp", 2),
    ("hkd", 2),
    ("huf", 2),
    ("ils", 2),
    ("inr", 2),
    ("jpy", 0),
    ("krw", 0),
    ("mxn", 2),
    ("nok", 2),
    ("nzd", 2),
    ("pln", 2),
    ("sek", 2),
    ("sgd", 2),
    ("usd", 2),
    ("vnd", 0),
    ("zar", 2),
];

/// One sign-up exactly as it arrives (camelCase JSON).
///
/// Unknown fields are refused: a misspelt `initialpayment` must not
/// silently register someone without their payment.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrationInput {
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub phone_number: Option<String>,
    pub initial_payment: Option<PaymentInput>,
    #[serde(default)]
    pub preferences: Preferences,
}

/// The optional first payment as it arrives.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaymentInput {
    /// A JSON number in major units with at most two decimals.
    pub amount: serde_json::Value,
    pub payment_method: Option<String>,
    pub currency: Option<String>,
}

/// What the user agreed to receive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    #[serde(default)]
    pub newsletter: bool,
    #[serde(default)]
    pub sms_notifications: bool,
}

/// A checked registration; this is what a saga stores and replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Trimmed and lower-cased; the key for re-submission.
    pub email: String,
    pub full_name: String,
    /// E.164: `+` and digits only.
    pub phone: Option<String>,
    pub payment: Option<Payment>,
    pub preferences: Preferences,
}

/// A checked payment in integer minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub amount_minor: u64,
    /// ISO 4217, lower-case.
    pub currency: String,
    pub method: PaymentMethod,
}

impl Payment {
    /// The amount in major units with its currency, e.g. `29.99 USD`.
    pub fn display_amount(&self) -> String {
        let exponent = CURRENCIES
            .iter()
            .find(|(code, _)| *code == self.currency)
            .map_or(2, |(_, exponent)| *exponent);
        let code = self.currency.to_ascii_uppercase();
        if exponent == 0 {
            return format!("{} {code}", self.amount_minor);
        }
        let factor = 10u64.pow(exponent);
        let width = exponent as usize;
        format!(
            "{}.{:0width$} {code}",
            self.amount_minor / factor,
            self.amount_minor % factor
        )
    }
}

/// The payment methods regsaga accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentMethod {
    CreditCard,
    DebitCard,
    BankTransfer,
    Paypal,
}

impl PaymentMethod {
    const ALL: [PaymentMethod; 4] = [
        PaymentMethod::CreditCard,
        PaymentMethod::DebitCard,
        PaymentMethod::BankTransfer,
        PaymentMethod::Paypal,
    ];

    /// The name used in input JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::CreditCard => "credit_card",
            PaymentMethod::DebitCard => "debit_card",
            PaymentMethod::BankTransfer => "bank_transfer",
            PaymentMethod::Paypal => "paypal",
        }
    }
}

impl FromStr for PaymentMethod {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|m| m.as_str() == s).ok_or(())
    }
}

impl fmt::Display for PaymentMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an input was rejected: the field and the rule it broke.
///
/// Messages never repeat the rejected value, so a mistyped card number or
/// a secret pasted into a field is not echoed into logs or reject files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct Invalid {
    pub field: &'static str,
    pub rule: String,
}

fn invalid(field: &'static str, rule: impl Into<String>) -> Invalid {
    Invalid {
        field,
        rule: rule.into(),
    }
}

impl RegistrationInput {
    /// Checks every field and returns the form a saga stores.
    ///
    /// # Errors
    ///
    /// The first rule that the input breaks, naming the field.
    pub fn validate(self) -> Result<Registration, Invalid> {
        let email = check_email(self.email.as_deref())?;
        let full_name = check_name(self.full_name)?;
        let phone = self.phone_number.map(|p| check_phone(&p)).transpose()?;
        let payment = self.initial_payment.map(check_payment).transpose()?;

        Ok(Registration {
            email,
            full_name,
            phone,
            payment,
            preferences: self.preferences,
        })
    }
}

/// Trims an e-mail address, checks it, and lower-cases it: the form under
/// which a registration is stored and found again.
///
/// # Errors
///
/// The address is empty, too long, or not a valid e-mail address.
pub fn normalize_email(raw: &str) -> Result<String, Invalid> {
    check_email(Some(raw))
}

fn check_email(raw: Option<&str>) -> Result<String, Invalid> {
    let raw = raw.map(str::trim).unwrap_or_default();
    if raw.is_empty() {
        return Err(invalid("email", "is required"));
    }
    if raw.len() > 254 {
        return Err(invalid("email", "must be at most 254 bytes"));
    }
    let parsed = email_address::EmailAddress::from_str(raw)
        .map_err(|_| invalid("email", "is not a valid e-mail address"))?;
    if holds_card_number(parsed.local_part()) {
        return Err(invalid(
            "email",
            "looks like it holds a payment card number; card data is never accepted",
        ));
    }

    // RFC 5321 lets a server treat the local part as case-sensitive, but
    // providers (and SCIM userName uniqueness) do not: two addresses that
    // differ only in case are one person, so they are one registration.
    Ok(format!("{}@{}", parsed.local_part(), parsed.domain()).to_lowercase())
}

/// An e-mail address for logs and messages: the first character of the
/// local part and the domain, `j***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// A phone number for logs and messages: its last two digits only.
pub fn mask_phone(phone: &str) -> String {
    let tail: String = phone
        .chars()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("+***{tail}")
}

/// Whether `text` holds a run of 13 or more digits, possibly split by
/// spaces, dashes, dots or slashes: the shape of a payment card number,
/// which regsaga must never store. No name or e-mail needs that many
/// digits in a row, so the rule does not try to tell cards from others.
fn holds_card_number(text: &str) -> bool {
    let mut run = 0;
    let mut separators = 0;
    for c in text.chars() {
        match c {
            '0'..='9' => {
                run += 1;
                separators = 0;
                if run >= 13 {
                    return true;
                }
            }
            // One separator between digit groups keeps the run going.
            ' ' | '-' | '.' | '/' if run > 0 && separators == 0 => separators += 1,
            _ => {
                run = 0;
                separators = 0;
            }
        }
    }
    false
}

fn check_name(raw: Option<String>) -> Result<String, Invalid> {
    let name = raw.unwrap_or_default();
    if name.trim().is_empty() {
        return Err(invalid("fullName", "is required and must not be blank"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(
            "fullName",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("fullName", "must not contain control characters"));
    }
    if holds_card_number(&name) {
        return Err(invalid(
            "fullName",
            "looks like it holds a payment card number; card data is never accepted",
        ));
    }
    Ok(name)
}

/// E.164: a `+`, then 8 to 15 digits, the first not zero. Spaced, dashed
/// or bracketed forms are rejected rather than guessed at.
fn check_phone(raw: &str) -> Result<String, Invalid> {
    let digits = raw.strip_prefix('+').unwrap_or("");
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !ok {
        return Err(invalid(
            "phoneNumber",
            "must be in E.164 form: '+' followed by 8 to 15 digits",
        ));
    }
    Ok(raw.to_owned())
}

fn check_payment(input: PaymentInput) -> Result<Payment, Invalid> {
    let currency = input
        .currency
        .as_deref()
        .unwrap_or(DEFAULT_CURRENCY)
        .to_ascii_lowercase();
    let exponent = CURRENCIES
        .iter()
        .find(|(code, _)| *code == currency)
        .map(|(_, exponent)| *exponent)
        .ok_or_else(|| {
            let known: Vec<_> = CURRENCIES.iter().map(|(code, _)| *code).collect();
            invalid(
                "initialPayment.currency",
                format!("must be one of {}", known.join(", ")),
            )
        })?;
    let amount_minor = minor_units(&input.amount, exponent)?;
    let method = input
        .payment_method
        .as_deref()
        .ok_or_else(|| invalid("initialPayment.paymentMethod", "is required"))?
        .parse::<PaymentMethod>()
        .map_err(|()| {
            let known: Vec<_> = PaymentMethod::ALL.iter().map(|m| m.as_str()).collect();
            invalid(
                "initialPayment.paymentMethod",
                format!("must be one of {}", known.join(", ")),
            )
        })?;

    Ok(Payment {
        amount_minor,
        currency,
        method,
    })
}

/// Converts a JSON amount in major units to minor units without a float
/// multiply: the number's shortest decimal form is parsed as a decimal.
fn minor_units(amount: &serde_json::Value, exponent: u32) -> Result<u64, Invalid> {
    const FIELD: &str = "initialPayment.amount";
    let number = amount
        .as_number()
        .ok_or_else(|| invalid(FIELD, "must be a JSON number"))?;

    // serde_json prints an f64 in its shortest round-trip form, so 19.99
    // arrives here as "19.99", never as 19.989999999999998.
    let text = number.to_string();
    let decimal = Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| invalid(FIELD, "is too large"))?
        .normalize();
    if decimal.scale() > exponent {
        let rule = match exponent {
            0 => "must be a whole number in this currency".to_owned(),
            n => format!("must have at most {n} decimals"),
        };
        return Err(invalid(FIELD, rule));
    }
    if decimal <= Decimal::ZERO {
        return Err(invalid(FIELD, "must be greater than zero"));
    }

    // Exact: the scale is at most the exponent, so this is a whole number.
    let minor = (decimal * Decimal::from(10u64.pow(exponent)))
        .to_u64()
        .ok_or_else(|| invalid(FIELD, "is too large"))?;
    if minor > MAX_AMOUNT_MINOR {
        return Err(invalid(
            FIELD,
            format!("must be at most {MAX_AMOUNT_MINOR} in minor units"),
        ));
    }
    Ok(minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Registration, Invalid> {
        serde_json::from_str::<RegistrationInput>(json)
            .expect("test input is valid JSON")
            .validate()
    }

    fn amount(json_amount: &str) -> Result<u64, Invalid> {
        let r = parse(&format!(
            r#"{{"email":"a@b.example","fullName":"A","initialPayment":
                {{"amount":{json_amount},"paymentMethod":"credit_card"}}}}"#
        ))?;
        Ok(r.payment.expect("payment present").amount_minor)
    }

    #[test]
    fn amounts_become_exact_minor_units() {
        assert_eq!(amount("19.99"), Ok(1999));
        assert_eq!(amount("8.20"), Ok(820));
        assert_eq!(amount("8.2"), Ok(820));
        assert_eq!(amount("0.3"), Ok(30));
        assert_eq!(amount("1499"), Ok(149_900));
        assert_eq!(amount("0.01"), Ok(1));
        assert_eq!(amount("999999.99"), Ok(99_999_999));
    }

    #[test]
    fn bad_amounts_are_rejected() {
        for bad in [
            "29.999",
            "0",
            "-5.0",
            "\"NaN\"",
            "\"19.99\"",
            "1e300",
            "1000000",
        ] {
            let err = amount(bad).expect_err(bad);
            assert_eq!(err.field, "initialPayment.amount", "{bad}");
        }
    }

    #[test]
    fn zero_decimal_currencies_are_not_multiplied() {
        let pay = |amount: &str, currency: &str| {
            parse(&format!(
                r#"{{"email":"a@b.example","fullName":"A","initialPayment":
                    {{"amount":{amount},"currency":"{currency}","paymentMethod":"paypal"}}}}"#
            ))
            .map(|r| r.payment.unwrap())
        };
        let yen = pay("500", "JPY").unwrap();
        assert_eq!((yen.amount_minor, yen.currency.as_str()), (500, "jpy"));
        assert_eq!(yen.display_amount(), "500 JPY");
        assert_eq!(pay("8.2", "usd").unwrap().display_amount(), "8.20 USD");
        assert_eq!(pay("19.99", "eur").unwrap().amount_minor, 1999);
        assert!(pay("500.5", "jpy")
            .unwrap_err()
            .rule
            .contains("whole number"));
        assert_eq!(
            pay("1.5", "kwd").unwrap_err().field,
            "initialPayment.currency"
        );
        assert_eq!(
            pay("1", "zzz").unwrap_err().field,
            "initialPayment.currency"
        );
    }

    #[test]
    fn email_is_lowercased_and_plus_kept() {
        let r = parse(r#"{"email":" Valid.Two+tag@Sub.Example.ORG ","fullName":"Zoë"}"#).unwrap();
        assert_eq!(r.email, "valid.two+tag@sub.example.org");
        assert_eq!(r.full_name, "Zoë");
    }

    #[test]
    fn rules_name_the_field() {
        let cases = [
            (
                r#"{"email":"no-at-sign.example.com","fullName":"A"}"#,
                "email",
            ),
            (r#"{"email":"two@@example.com","fullName":"A"}"#, "email"),
            (r#"{"email":"","fullName":"A"}"#, "email"),
            (r#"{"email":"c@example.com"}"#, "fullName"),
            (r#"{"email":"c@example.com","fullName":"  "}"#, "fullName"),
            (
                r#"{"email":"d@example.com","fullName":"D","phoneNumber":"2025550101"}"#,
                "phoneNumber",
            ),
            (
                r#"{"email":"d@example.com","fullName":"D","phoneNumber":"+44 (0) 7700 900123"}"#,
                "phoneNumber",
            ),
            (
                r#"{"email":"m@example.com","fullName":"M","initialPayment":{"amount":1}}"#,
                "initialPayment.paymentMethod",
            ),
            (
                r#"{"email":"h@example.com","fullName":"H","initialPayment":
                    {"amount":1,"paymentMethod":"carrier_pigeon"}}"#,
                "initialPayment.paymentMethod",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(parse(json).expect_err(json).field, field, "{json}");
        }
    }

    #[test]
    fn card_numbers_are_refused_and_masks_hide_personal_data() {
        for name in [
            "Jo 4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "x5555555555554444",
        ] {
            let json = format!(r#"{{"email":"a@b.example","fullName":"{name}"}}"#);
            let err = parse(&json).unwrap_err();
            assert!(err.rule.contains("card"), "{name}");
            assert!(!err.to_string().contains("4111"), "{err}");
        }
        // Fewer digits in a row are fine.
        assert!(parse(r#"{"email":"a@b.example","fullName":"Unit 123456789012"}"#).is_ok());
        assert!(parse(r#"{"email":"a@b.example","fullName":"Louis XIV 1638 - 1715"}"#).is_ok());

        assert_eq!(mask_email("jane.roe@example.com"), "j***@example.com");
        assert_eq!(mask_phone("+12025550143"), "+***43");
    }

    #[test]
    fn rejections_do_not_echo_the_value() {
        let err =
            parse(r#"{"email":"x@example.com","fullName":"X","phoneNumber":"4111111111111111"}"#)
                .unwrap_err();
        assert!(!err.to_string().contains("4111"), "{err}");
    }
}
