"""Generate ``pii_corpus.jsonl``: labelled PII cases and hard negatives for the redactor.

Deterministic (fixed seed): re-running rewrites the same file.

    uv run python tests/data/pii_corpus_gen.py

Positives carry valid checksums (Luhn cards, mod-97 IBANs from the country formats in
python-stdnum, SSNs outside the SSA's invalid ranges, phone numbers that libphonenumber
holds valid for their region). Every label's ``value`` is an exact substring of ``text``.
Hard negatives are things that look numeric or key-like but are not PII: they must yield
no findings at all.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
from pathlib import Path
from typing import Any

import phonenumbers
from stdnum import iban, luhn, numdb

OUT = Path(__file__).with_name("pii_corpus.jsonl")
rng = random.Random(20240315)
cases: list[dict[str, Any]] = []


def add(prefix: str, template: str, *entities: tuple[str, str]) -> None:
    """A case from a template with ``{}`` slots filled by the entity values, in order."""
    text = template.format(*(value for _, value in entities))
    for _, value in entities:
        assert value in text, (template, value)
    n = sum(1 for c in cases if c["id"].startswith(prefix + "-")) + 1
    cases.append(
        {
            "id": f"{prefix}-{n:03d}",
            "text": text,
            "entities": [{"type": t, "value": v} for t, v in entities],
        }
    )


def pick(seq: list[str]) -> str:
    return rng.choice(seq)


def digits(n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def b64(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


# -- e-mail ------------------------------------------------------------------------------

FIRST = ["maria", "john", "wei", "aisha", "lukas", "sofia", "olivier", "priya", "tom", "ines"]
LAST = ["garcia", "smith", "zhang", "khan", "mueller", "rossi", "dubois", "patel", "nguyen"]
DOMAINS = [
    "example.com",
    "acme-corp.co.uk",
    "globex.io",
    "mail.eu.example.org",
    "gmail.com",
    "outlook.de",
    "uni-heidelberg.de",
    "company.fr",
    "startup.ai",
    "health.gov.au",
]
EMAIL_TEMPLATES = [
    "Please send the invoice to {}.",
    "Contact: {}",
    "My email is {} if you need anything else",
    "From: Maria Garcia <{}>",
    'Reply-To: "Support" <{}>',
    "cc {} on the escalation, thanks!",
    '{{"user": {{"email": "{}", "plan": "pro"}}}}',
    "mailto:{}?subject=Refund",
    "email,name\n{},Lukas",
    "Forwarded message from {} -- see below",
    "You can reach me at {}. Best, J.",
    "ping {} (on leave until Monday)",
]
for i in range(36):
    first, last = pick(FIRST), pick(LAST)
    local = [
        f"{first}.{last}",
        f"{first[0]}.{last}",
        f"{first}{digits(2)}",
        f"{first}.{last}+billing",
        f"{first}_{last}",
        f"{first.upper()}.{last.upper()}",
        f"{last}-{first}",
        "support",
    ][i % 8]
    add("email", EMAIL_TEMPLATES[i % len(EMAIL_TEMPLATES)], ("EMAIL", f"{local}@{pick(DOMAINS)}"))
add("email", "Schreiben Sie an {} bitte.", ("EMAIL", "jürgen.müller@beispiel.de"))
add("email", "Patrick's address: {}", ("EMAIL", "p.o'connor@firm.ie"))
add("email", "Two owners: {}, {}", ("EMAIL", "a.khan@globex.io"), ("EMAIL", "ops@globex.io"))
add("email", "'{}' bounced yesterday", ("EMAIL", "noreply@mail.example.net"))

# -- phone -------------------------------------------------------------------------------


def valid(number: str, region: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(number, region))
    except phonenumbers.NumberParseException:
        return False


def us_number() -> tuple[str, str, str]:
    while True:
        area = pick(["212", "415", "312", "617", "206", "512", "303", "404", "646", "718"])
        exch, line = str(rng.randint(201, 989)), digits(4)
        if valid(area + exch + line, "US"):
            return area, exch, line


def phone_values() -> list[str]:
    out = []
    for fmt in [
        "({a}) {e}-{l}",
        "{a}-{e}-{l}",
        "{a}.{e}.{l}",
        "{a} {e} {l}",
        "+1 {a} {e} {l}",
        "+1-{a}-{e}-{l}",
        "+1 ({a}) {e}-{l}",
        "1-{a}-{e}-{l}",
        "{a}{e}{l}",
        "+1{a}{e}{l}",
        "({a}) {e}-{l}",
        "+1.{a}.{e}.{l}",
    ]:
        a, e, line = us_number()
        out.append(fmt.format(a=a, e=e, l=line))
    out += ["(415) 555-0132", "+1-415-555-0132", "+1 800 555 0199"]
    # United Kingdom: Ofcom's drama ranges and real-format numbers.
    out += [
        "020 7946 0958",
        "+44 20 7946 0958",
        "+44 (0)20 7946 0018",
        "0044 20 7946 0321",
        "0161 496 0734",
        "+44 161 496 0000",
        "0113 496 0601",
        "07911 123456",
        "+44 7911 123456",
        "020-7946-0123",
        "0207 946 0958",
    ]
    # Germany, France.
    out += [
        "030 123456",
        "030 1234567",
        "+49 30 1234567",
        "+49 (0)30 12345678",
        "030/1234567",
        "089 12345678",
        "040 1234567",
        "0151 23456789",
        "+49 151 23456789",
        "0049 89 1234567",
        "01 23 45 67 89",
        "06 12 34 56 78",
        "+33 1 23 45 67 89",
        "+33 6 12 34 56 78",
        "01.42.68.53.00",
        "0612345678",
        "04 91 23 45 67",
        "+33 (0)4 91 23 45 67",
    ]
    # International format, elsewhere.
    out += [
        "+34 912 345 678",
        "+39 06 1234 5678",
        "+31 20 123 4567",
        "+353 1 234 5678",
        "+61 2 9876 5432",
        "+61 412 345 678",
        "+91 98765 43210",
        "+81 3-1234-5678",
        "+55 11 91234-5678",
        "+41 44 668 18 00",
        "+65 6123 4567",
        "+52 55 1234 5678",
        "+48 22 123 45 67",
        "+27 21 123 4567",
        "+46 8 123 456 78",
        "+86 138 0013 8000",
    ]
    for value in out:
        assert valid(value, "US") or valid(value, "GB") or valid(value, "DE") or valid(value, "FR")
    return out


PHONE_TEMPLATES = [
    "Call me at {} after 5pm.",
    "Phone: {}",
    "my cell is {}, text first",
    "Tel. {} (office)",
    "You can reach our front desk on {}.",
    "WhatsApp {} please",
    "Fax: {}",
    '{{"name": "Ines", "phone": "{}"}}',
    "Emergency contact - {} (mother)",
    "He left a voicemail from {} at 10:30 this morning.",
    "Rückruf bitte unter {}",
    "Appelez-moi au {} demain.",
]
for i, value in enumerate(phone_values()):
    add("phone", PHONE_TEMPLATES[i % len(PHONE_TEMPLATES)], ("PHONE", value))
add("phone", "Call {} or {} if no answer", ("PHONE", "020 7946 0958"), ("PHONE", "+1 415 555 0187"))

# -- payment cards -----------------------------------------------------------------------


def card(prefix: str, length: int) -> str:
    body = prefix + digits(length - len(prefix) - 1)
    return body + luhn.calc_check_digit(body)


def grouped(number: str, sep: str) -> str:
    if len(number) == 15:  # Amex 4-6-5
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


CARD_NUMBERS = [
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "3530111333300000",
    "4242424242424242",
    "2223003122003222",
]
for prefix, length in [
    ("4", 16),
    ("4", 16),
    ("4", 19),
    ("51", 16),
    ("53", 16),
    ("55", 16),
    ("2221", 16),
    ("2720", 16),
    ("34", 15),
    ("37", 15),
    ("6011", 16),
    ("65", 16),
    ("3528", 16),
    ("62", 16),
    ("36", 14),
    ("4", 13),
    ("6759", 16),
    ("4", 16),
    ("5", 16),
    ("37", 15),
    ("4", 16),
    ("55", 16),
    ("6011", 16),
    ("4", 16),
    ("62", 19),
    ("4", 16),
    ("52", 16),
    ("4", 16),
]:
    number = card(prefix, length)
    while prefix == "5" and not "51" <= number[:2] <= "55":
        number = card(prefix, length)
    CARD_NUMBERS.append(number)
CARD_TEMPLATES = [
    "My card number is {}, exp 09/27.",
    "Charge it to {} please",
    "card: {} cvv 123",
    "The customer paid with {} and wants a refund.",
    '{{"pan": "{}", "exp": "11/26"}}',
    "Visa ending in 1111? No, the full number is {}.",
    "Payment failed for {} (insufficient funds).",
    "Kartennummer {} gültig bis 12/25",
]
for i, number in enumerate(CARD_NUMBERS):
    value = [grouped(number, " "), grouped(number, "-"), number][i % 3]
    add("card", CARD_TEMPLATES[i % len(CARD_TEMPLATES)], ("CARD", value))
add("card", "Order 12 paid with {} on 2025-01-04", ("CARD", "4111 1111 1111 1111"))

# -- IBAN --------------------------------------------------------------------------------

_IBAN_DB = numdb.get("iban")


def make_iban(country: str) -> str:
    """A random IBAN in the country's BBAN format ("5!n5!n11!c2!n") with valid checksums."""
    bban_format = _IBAN_DB.info(country + "00")[0][1]["bban"]
    pools = {
        "n": string.digits,
        "a": string.ascii_uppercase,
        "c": string.ascii_uppercase + string.digits,
    }
    parts = [(int(n), kind) for n, kind in re.findall(r"(\d+)!?([nac])", bban_format)]
    while True:  # some countries add national check digits: retry until stdnum agrees
        bban = "".join(rng.choice(pools[kind]) for n, kind in parts for _ in range(n))
        number = country + iban.calc_check_digits(country + "00" + bban) + bban
        if iban.is_valid(number):
            return number


IBANS = [
    "DE89370400440532013000",
    "GB82WEST12345698765432",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
    "BE71096123456769",
    "CH9300762011623852957",
]
COUNTRIES = "DE GB FR ES IT NL BE AT CH PL SE DK NO FI IE PT LU CZ HU RO SA AE DE GB ES"
for country in COUNTRIES.split():
    IBANS.append(make_iban(country))
assert all(iban.is_valid(number) for number in IBANS)
IBAN_TEMPLATES = [
    "Please wire the deposit to IBAN {}.",
    "IBAN: {}",
    "Bankverbindung: {} (Sparkasse)",
    "Virement sur le compte {} avant vendredi.",
    '{{"iban": "{}", "bic": "DEUTDEFF"}}',
    "Refund to {} EUR 120.00",
    "New payout account {} confirmed.",
]
for i, number in enumerate(IBANS):
    value = iban.format(number) if i % 2 else number
    add("iban", IBAN_TEMPLATES[i % len(IBAN_TEMPLATES)], ("IBAN", value))

# -- US SSN ------------------------------------------------------------------------------


def ssn() -> str:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


SSN_TEMPLATES = [
    "SSN: {}",
    "My social security number is {}.",
    "Applicant SSN {} (verified)",
    '{{"ssn": "{}", "dob": "1984-07-12"}}',
    "Tax ID on file: {}",
    "employee 4471, ssn {}, start date 2023-02-01",
]
for i in range(24):
    add("ssn", SSN_TEMPLATES[i % len(SSN_TEMPLATES)], ("SSN", ssn()))
add("ssn", "SSN: {}", ("SSN", ssn().replace("-", "")))
add("ssn", "social security number {}", ("SSN", ssn().replace("-", " ")))

# -- IP addresses ------------------------------------------------------------------------


def ipv4() -> str:
    return pick(
        [
            f"203.0.113.{rng.randint(1, 254)}",
            f"198.51.100.{rng.randint(1, 254)}",
            f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            ".".join(
                str(rng.randint(lo, hi)) for lo, hi in [(11, 223), (0, 255), (0, 255), (1, 254)]
            ),
        ]
    )


IP_TEMPLATES = [
    "Failed password for root from {} port 22 ssh2",
    "The server at {} is not responding.",
    "X-Forwarded-For: {}",
    "connect to {}:5432 failed: connection refused",
    '{{"client_ip": "{}", "status": 403}}',
    "Whitelist {} in the firewall please.",
    "GET /api/v1/users 200 - {} - 12ms",
]
for i in range(24):
    add("ip", IP_TEMPLATES[i % len(IP_TEMPLATES)], ("IP", ipv4()))
for value in [
    "2001:db8:85a3::8a2e:370:7334",
    "fe80::1ff:fe23:4567:890a",
    "2001:0db8:0000:0000:0000:ff00:0042:8329",
    "::ffff:192.0.2.128",
    "2606:4700:4700::1111",
    "2a00:1450:4001:82a::200e",
    "2001:db8::1",
    "FE80::0202:B3FF:FE1E:8329",
]:
    add("ip", IP_TEMPLATES[len(cases) % len(IP_TEMPLATES)], ("IP", value))
add("ip", "listening on [{}]:8080", ("IP", "2001:db8::42"))
add("ip", "route {} via {}", ("IP", "172.16.5.4"), ("IP", "172.16.0.1"))

# -- secrets -----------------------------------------------------------------------------

URLSAFE = string.ascii_letters + string.digits + "_-"


def jwt() -> str:
    def seg(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = seg({"alg": pick(["HS256", "RS256", "ES256"]), "typ": "JWT"})
    payload = seg({"sub": digits(8), "iat": 1700000000 + rng.randint(0, 10**6), "role": "user"})
    return f"{header}.{payload}.{b64(43, URLSAFE)}"


def pem(label: str) -> str:
    body = "\n".join(b64(64, string.ascii_letters + string.digits + "+/") for _ in range(6))
    return f"-----BEGIN {label}-----\n{body}\nAB==\n-----END {label}-----"


SECRETS = [
    "sk-" + b64(48),
    "sk-proj-" + b64(156, URLSAFE),
    "sk-proj-" + b64(120, URLSAFE),
    "sk-svcacct-" + b64(100, URLSAFE),
    "sk-ant-api03-" + b64(93, URLSAFE) + "AA",
    "sk-ant-api03-" + b64(93, URLSAFE) + "AA",
    "sk-ant-admin01-" + b64(93, URLSAFE) + "AA",
    "AKIA" + b64(16, string.ascii_uppercase + string.digits),
    "AKIA" + b64(16, string.ascii_uppercase + string.digits),
    "ASIA" + b64(16, string.ascii_uppercase + string.digits),
    "ghp_" + b64(36),
    "gho_" + b64(36),
    "ghu_" + b64(36),
    "ghs_" + b64(36),
    "ghr_" + b64(36),
    "github_pat_" + b64(22) + "_" + b64(59),
    "sk_live_" + b64(24),
    "sk_live_" + b64(99),
    "sk_test_" + b64(24),
    "rk_live_" + b64(24),
    "pk_live_" + b64(24),
    "pk_test_" + b64(24),
    "whsec_" + b64(32),
    "xoxb-" + digits(12) + "-" + digits(13) + "-" + b64(24),
    "xoxp-" + digits(12) + "-" + digits(12) + "-" + digits(13) + "-" + b64(32).lower(),
    "AIza" + b64(35, URLSAFE),
    jwt(),
    jwt(),
    jwt(),
]
SECRET_TEMPLATES = [
    "Here is my API key: {} -- why does it return 401?",
    "export OPENAI_API_KEY={}",
    "curl -H 'Authorization: Bearer {}' https://api.example.com/v1/me",
    'config = {{"api_key": "{}", "timeout": 30}}',
    "token={}&format=json",
    "I accidentally committed {} to the repo, how do I rotate it?",
]
for i, value in enumerate(SECRETS):
    add("secret", SECRET_TEMPLATES[i % len(SECRET_TEMPLATES)], ("SECRET", value))
aws_secret = b64(40, string.ascii_letters + string.digits + "/+")
add("secret", "aws_secret_access_key = {}", ("SECRET", aws_secret))
add(
    "secret",
    "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\nregion = eu-west-1",
    ("SECRET", "AKIA" + b64(16, string.ascii_uppercase + string.digits)),
    ("SECRET", b64(40, string.ascii_letters + string.digits + "/+")),
)
add(
    "secret",
    'AWS_SECRET_ACCESS_KEY="{}"',
    ("SECRET", b64(40, string.ascii_letters + string.digits + "/+")),
)
for label in ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"]:
    add("secret", "Why does ssh reject this key?\n\n{}\n\nThanks!", ("SECRET", pem(label)))
escaped = pem("PRIVATE KEY").replace("\n", "\\n")
add("secret", '{{"type": "service_account", "private_key": "{}\\n"}}', ("SECRET", escaped))
add(
    "secret",
    "Authorization: Bearer {}",
    ("SECRET", jwt()),
)

# -- mixed -------------------------------------------------------------------------------

add(
    "mixed",
    "Hi, I'm Maria Garcia ({}), call {}. Card {} was charged twice.",
    ("EMAIL", "maria.garcia@example.com"),
    ("PHONE", "(415) 555-0132"),
    ("CARD", "4111 1111 1111 1111"),
)
add(
    "mixed",
    "Login from {} by {} failed 3 times at 12:30:45 on 2024-03-15.",
    ("IP", "203.0.113.42"),
    ("EMAIL", "j.smith@acme-corp.co.uk"),
)
add(
    "mixed",
    "Refund order ORD-2024-001234 to IBAN {} and notify {}.",
    ("IBAN", "DE89 3704 0044 0532 0130 00"),
    ("EMAIL", "billing@globex.io"),
)
add(
    "mixed",
    "--\nTom Nguyen | Sales\nM: {}\nE: {}\nwww.startup.ai",
    ("PHONE", "+44 7911 123456"),
    ("EMAIL", "tom.nguyen@startup.ai"),
)
add(
    "mixed",
    "DATABASE_URL=postgres://app@{}:5432/prod\nSTRIPE_KEY={}",
    ("IP", "10.0.3.17"),
    ("SECRET", "sk_live_" + b64(24)),
)
add(
    "mixed",
    "Patient SSN {}, phone {}, invoice INV-2024-0042 due 15/03/2024.",
    ("SSN", "219-45-8766"),
    ("PHONE", "212-555-0187"),
)
add(
    "mixed",
    "v2.3.1 deployed to {} by {}; build 10.0.19045 unaffected",
    ("IP", "192.168.10.25"),
    ("EMAIL", "ops@example.com"),
)
add(
    "mixed",
    "Ticket: customer {} ({}) asks to update card to {} and remove {}.",
    ("EMAIL", "aisha.khan@gmail.com"),
    ("PHONE", "+49 30 1234567"),
    ("CARD", "5555-5555-5555-4444"),
    ("CARD", "3782 822463 10005"),
)

# -- formats found in the wild -----------------------------------------------------------

add("phone", "Direct line {} ext. 12", ("PHONE", "+1 415-555-0132"))
add("phone", "<a href='tel:{}'>call us</a>", ("PHONE", "+14155550132"))
add("phone", "New UK mobile {} (not in the 2024 numbering plan yet)", ("PHONE", "+44 7911 654321"))
add("phone", "Moscow office {}", ("PHONE", "+7 (495) 123-45-67"))
add("phone", "Ring {}.", ("PHONE", "+44 20 7946 0958"))
add("phone", "Rufnummer {} oder {}", ("PHONE", "+49 (0)89 1234567"), ("PHONE", "0049 89 1234567"))
add("phone", "{} x204 (reception)", ("PHONE", "+1 (212) 555-0187"))
add("phone", "Handy: {}", ("PHONE", "0151 2345 6789"))
add("phone", "Telefon {} (Zentrale)", ("PHONE", "030 12 34 56"))
add("phone", "mobil {} oder {}", ("PHONE", "0170 123 45 67"), ("PHONE", "0171/1234567"))
add("phone", "London office {}, NY office {}", ("PHONE", "020 79460958"), ("PHONE", "415 5550132"))
add("phone", "Freephone {}", ("PHONE", "0800 123 4567"))
add("iban", "iban {} (typed in lower case)", ("IBAN", "de89 3704 0044 0532 0130 00"))
add("ip", "open http://{}/admin or {}:8080", ("IP", "192.168.0.1"), ("IP", "10.0.0.1"))
add("ip", "ping {}%eth0", ("IP", "fe80::1ff:fe23:4567:890a"))
add("ssn", "SSN#: {}", ("SSN", "123-45-6789"))
add(
    "secret",
    "<script src='https://maps.googleapis.com/maps/api/js?key={}'></script>",
    ("SECRET", "AIza" + b64(35, URLSAFE)),
)
add(
    "mixed",
    "Subject: Re: refund\n\nHi team,\n\nplease refund {} (card {}, exp 04/27) and send "
    "the confirmation to {}. Her number is {}; she called twice from {}.\n\nThanks,\n"
    "Olivier Dubois\n{}",
    ("EMAIL", "sofia.rossi@company.fr"),
    ("CARD", "4000 0566 5566 5556"),
    ("EMAIL", "sofia.rossi@gmail.com"),
    ("PHONE", "06 12 34 56 78"),
    ("PHONE", "+33 1 23 45 67 89"),
    ("EMAIL", "olivier.dubois@company.fr"),
)
add(
    "mixed",
    "2024-03-15 12:30:45,123 WARN auth login failed user={} ip={} ua=Mozilla/5.0 "
    "(Windows NT 10.0; Win64; x64) req=550e8400-e29b-41d4-a716-446655440000",
    ("EMAIL", "wei.zhang@globex.io"),
    ("IP", "2a00:1450:4001:82a::200e"),
)
add(
    "mixed",
    "Summarise this CRM record:\nname: Priya Patel\nemail: {}\nphone: {}\n"
    "ssn: {}\niban: {}\nnotes: VIP since 2019, order ORD-2024-001234 pending",
    ("EMAIL", "priya.patel@health.gov.au"),
    ("PHONE", "+61 412 345 678"),
    ("SSN", "536-22-1948"),
    ("IBAN", "GB82 WEST 1234 5698 7654 32"),
)

# -- hard negatives ----------------------------------------------------------------------

NEGATIVES = [
    "Order ORD-2024-001234 shipped on 2024-03-15.",
    "Your order #100045872 has been confirmed.",
    "Invoice INV-2024-0042 is due on 15/03/2024.",
    "Invoice number 2024-11-0087, total $1,299.00",
    "Meeting moved to 03/15/2024 at 14:00.",
    "Dates: 2024-03-15, 15.03.2024, 15/03/2024, March 15, 2024",
    "The event runs 2024-03-15T09:30:00Z to 2024-03-16T17:00:00+01:00.",
    "Upgrade to v1.2.3 or later.",
    "Windows 10.0.19045 build 3570 is affected.",
    "Requires Python 3.11.7 and numpy 1.26.4",
    "Chrome 124.0.6367.91 crashes on start",
    "version 1.2.3.4 of the firmware",
    "OID 1.3.6.1.4.1.311 is registered to Microsoft",
    "Not an address: 10.0.1.2.3",
    "semver 2.0.0-rc.1+build.123",
    "Card 4111 1111 1111 1112 was declined (typo).",
    "Reference 1234567812345678 failed validation.",
    "Tracking ID 5500 0000 0000 0005 and 4000-1234-5678-9011",
    "Created at 1700000000 (unix).",
    "ts=1700000000123 level=info msg=done",
    "epoch ms 1712345678901, s 1712345678",
    "Request id 550e8400-e29b-41d4-a716-446655440000",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
    "Fixed in commit 3f2a9c1d4b5e6f708192a3b4c5d6e7f8091a2b3c",
    "git cherry-pick 9fceb02",
    "Total: $1,299.00 (tax 19%: $207.43)",
    "Price 1.299,00 EUR incl. VAT",
    "UPS tracking 1Z999AA10123456784",
    "FedEx 7712 3456 7890 delivered",
    "USPS 9400 1000 0000 0000 0000 00",
    "SKU WH-1000XM5-BLK, qty 2",
    "Product code 0-12345-67890-5 (UPC)",
    "Part number 8471-30-0000 (HS code)",
    "The job ran from 12:30:45 to 13:02:11.",
    "Duration 01:23:45.678",
    "ISBN 978-3-16-148410-0",
    "ISBN-10: 0-306-40615-2",
    "ZIP 94103-1234, San Francisco",
    "Postcode SW1A 1AA, London",
    "10115 Berlin, Germany",
    "75008 Paris",
    "Build 20240315.4 passed; artifact 4711",
    "Build number 1.0.0.1234",
    "Compute 12345 * 6789 = 83810205",
    "2^32 = 4294967296",
    "pi is 3.14159265358979",
    "Population: 8,336,817 (2022)",
    "Coordinates 48.8566, 2.3522",
    "Color #FF5733 and rgb(255, 87, 51)",
    "Screen 1920x1080 at 144 Hz",
    "HTTP 404 at /api/v2/items/123456",
    "Port 8080, pid 31337, uid 1000",
    "John 3:16 and Psalm 23:1-6",
    "The ratio was 16:9 and the score 3-1.",
    "Call the function with timeout=30000 ms",
    "Account 12345678 (internal ledger)",
    "ext. 4021",
    "Room 4.12, floor 4",
    "Invalid SSN 000-12-3456",
    "SSN 666-12-3456 is never issued",
    "Range 900-12-3456 is reserved",
    "123-00-4567 has a zero group",
    "123-45-0000 has a zero serial",
    "Bad IBAN DE89 3704 0044 0532 0130 01",
    "GB00WEST12345698765432 has bad check digits",
    "256.1.1.1 is not an IP",
    "subnet 192.168.1 incomplete",
    "Time 10:30:00 and 12:00",
    "MAC 00:1A:2B:3C:4D:5E",
    "Rust std::collections::HashMap",
    "C++ std::vector<int>::iterator",
    "Use sklearn (sk-learn) for this task-based eval.",
    "The prefix sk- is used by OpenAI keys",
    "Set OPENAI_API_KEY=<your key here>",
    "AKIA is the prefix of AWS access key ids",
    "ghp_ tokens are GitHub personal access tokens",
    "Use pk_live_ keys only in the browser",
    "eyJ is how base64 JSON starts",
    "eyJhbGciOi.notvalid.x is truncated",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUY\n-----END CERTIFICATE-----",
    "npm install @types/node@18.11.9",
    "Decorators like @app.get('/items') and @pytest.fixture",
    "Mention @maria.garcia in the channel",
    "user@localhost cannot receive mail",
    "foo@bar is not a full address",
    "phone extension 555 0132",
    "Amounts: 100, 2500, 37500 and 1000000",
    "lat/long 40.7128/-74.0060",
    "Page 12 of 340, paragraph 4.2.1",
    "Section 4.2.1.3 covers retention",
    "Chemical CAS 7732-18-5 (water)",
    "Serial S/N 2024-0315-7788",
    "Flight LH 400 departs 10:45, gate B42",
    "Your verification code is 482913",
    "Bitcoin block 840000 was mined",
    "Temperature 36.6 C, BP 120/80, HR 72",
    "Matrix [[1, 2], [3, 4]] has det -2",
    "x = 0.1 + 0.2  # 0.30000000000000004",
    "Sort 9, 8, 7, 6, 5, 4, 3, 2, 1",
    "DOI 10.1038/s41586-020-2649-2",
    "arXiv:2305.10601v3",
    "Docker image sha256:9a0b5e6c7d8f4e2a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a",
    "Year range 1999-2024, decade 2010-2019",
    "Phone numbers must have 10 digits, e.g. ###-###-####",
    "Lottery numbers 04 12 23 34 45 06",
    "ID card no. L01X00T47",
    "Weight 72.5 kg, height 1.80 m",
    "Quarterly revenue grew 12.5% to 4.2 billion",
    "Table 3.2.1 shows the p-value 0.0001",
    "ticket ZD-88213 reopened",
    "JIRA PROJ-12345 blocked by PROJ-12299",
    "git clone git@github.com:acme/billing.git",
    "Add icon@2x.png and logo@3x.jpg to the asset catalog",
    "pin lodash@4.17.21 and react@18.2.0",
    "IMEI 490154203237518",
    "Total € 1 234 567,89 for 1 000 000 000 units",
    "lottery 23 45 67 89 01",
    "ISO 2024-03-15T12:30:45.123456Z",
    "Call 911 or dial 112 in the EU",
    "Release 4.2.1.0 notes",
    "In 2019 and 2020 we sold 1234567 units",
    "Date 2024/03/15 and 03-15-2024 and 15-03-2024",
    "Account no. 12345678, sort code 20-00-00",
    "US$ 4,111,111,111 revenue",
    "+1 for this proposal, +2 for the other",
    "Revenue +12.5% YoY, -3.2% QoQ",
    "Last login 02.12.2001 09:31 from the office",
    "Pinned dependency 0.30.53552 (nightly)",
    "Lottery numbers 06 12 34 56 78 90",
]
for text in NEGATIVES:
    add("neg", text.replace("{", "{{").replace("}", "}}"))


def main() -> None:
    with OUT.open("w", encoding="utf-8") as f:
        for case in cases:
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
    kinds: dict[str, int] = {}
    for case in cases:
        for e in case["entities"] or [{"type": "NONE"}]:
            kinds[e["type"]] = kinds.get(e["type"], 0) + 1
    print(f"{len(cases)} cases -> {OUT}: {kinds}")


if __name__ == "__main__":
    main()
