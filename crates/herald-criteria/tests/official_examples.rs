//! Table tests of search criteria against official R4 example resources
//! (`tests/examples/`, copied from `hl7.fhir.r4.examples@4.0.1` by
//! `scripts/extract-search-params --examples`), with the official R4 search
//! parameter definitions.
//!
//! Every row was written from the R4 search specification's semantics and the
//! example's content (quoted in the comments), not from running the code: for each
//! parameter type (number, date, string, token, reference, quantity, uri, composite),
//! each prefix (eq ne gt lt ge le sa eb ap) and each supported modifier, at least one
//! row that matches and one that does not. Herald's documented choices where the spec
//! leaves room: numbers and quantities use the precision of the search value
//! (`100` = [99.5, 100.5)) against the exact resource value, `sa`/`eb` mean beyond the
//! whole implied range, `ap` is ±10 % of the value (dates: of the gap to now), and
//! there is no unit conversion.

use std::path::PathBuf;

use herald_criteria::SearchQuery;
use serde_json::Value;

fn example(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/examples")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Runs `(criteria, expected)` rows against one example; reports every failure.
fn table(file: &str, rows: &[(&str, bool)]) {
    let resource = example(file);
    let mut failures = Vec::new();
    for (criteria, expected) in rows {
        match SearchQuery::parse(criteria) {
            Ok(query) => {
                if query.matches(&resource) != *expected {
                    failures.push(format!("{criteria}: expected {expected}"));
                }
            }
            Err(e) => failures.push(format!("{criteria}: compile error: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{file}, failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn number_chargeitem_factor_override() {
    // "factorOverride": 0.8
    table(
        "ChargeItem-example.json",
        &[
            ("ChargeItem?factor-override=0.8", true),
            ("ChargeItem?factor-override=0.80", true),
            ("ChargeItem?factor-override=0.9", false),
            // 1 means [0.5, 1.5); 1.0 means [0.95, 1.05)
            ("ChargeItem?factor-override=1", true),
            ("ChargeItem?factor-override=1.0", false),
            ("ChargeItem?factor-override=eq0.8", true),
            ("ChargeItem?factor-override=eq0.81", false),
            ("ChargeItem?factor-override=ne1.0", true),
            ("ChargeItem?factor-override=ne0.8", false),
            ("ChargeItem?factor-override=gt0.7", true),
            ("ChargeItem?factor-override=gt0.8", false),
            ("ChargeItem?factor-override=lt0.9", true),
            ("ChargeItem?factor-override=lt0.8", false),
            ("ChargeItem?factor-override=ge0.8", true),
            ("ChargeItem?factor-override=ge0.81", false),
            ("ChargeItem?factor-override=le0.8", true),
            ("ChargeItem?factor-override=le0.79", false),
            // sa/eb: beyond the implied range [0.65, 0.75) / [0.85, 0.95)
            ("ChargeItem?factor-override=sa0.7", true),
            ("ChargeItem?factor-override=sa0.8", false),
            ("ChargeItem?factor-override=eb0.9", true),
            ("ChargeItem?factor-override=eb0.8", false),
            // ap: within 10 % (0.75 ± 0.075 reaches 0.825; 0.7 ± 0.07 only 0.77)
            ("ChargeItem?factor-override=ap0.75", true),
            ("ChargeItem?factor-override=ap0.7", false),
            ("ChargeItem?factor-override=0.5,0.8", true),
            (
                "ChargeItem?factor-override=gt0.5&factor-override=lt0.9",
                true,
            ),
            (
                "ChargeItem?factor-override=gt0.5&factor-override=lt0.6",
                false,
            ),
            ("ChargeItem?factor-override:missing=false", true),
            ("ChargeItem?factor-override:missing=true", false),
            // quantity on Quantity {"value": 1} and Money {"value": 40, "currency": "EUR"}
            ("ChargeItem?quantity=1", true),
            ("ChargeItem?quantity=2", false),
            ("ChargeItem?price-override=40", true),
            ("ChargeItem?price-override=gt40", false),
        ],
    );
}

#[test]
fn number_riskassessment_probability() {
    // probabilityDecimal: 0.000168, 0.000368, … 0.001663 (eight predictions)
    table(
        "RiskAssessment-genetic.json",
        &[
            ("RiskAssessment?probability=0.000168", true),
            ("RiskAssessment?probability=0.000169", false),
            ("RiskAssessment?probability=gt0.0016", true),
            ("RiskAssessment?probability=gt0.002", false),
            ("RiskAssessment?probability=lt0.0002", true),
            ("RiskAssessment?probability=lt0.0001", false),
            // ne: none of the values is in [0.5, 1.5)
            ("RiskAssessment?probability=ne1", true),
            // ne: one value (0.000168) is eq, so not every value is ne
            ("RiskAssessment?probability=ne0.000168", false),
        ],
    );
    // "prediction" with qualitativeRisk only: no probability at all
    table(
        "RiskAssessment-prognosis.json",
        &[
            ("RiskAssessment?probability:missing=true", true),
            ("RiskAssessment?probability=ne0.5", false),
            ("RiskAssessment?probability=0.5", false),
            ("RiskAssessment?date=2010-11-22", true),
            ("RiskAssessment?subject=Patient/example", true),
        ],
    );
}

#[test]
fn quantity_observation_body_weight() {
    // "valueQuantity": {"value": 185, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"}
    table(
        "Observation-example.json",
        &[
            ("Observation?value-quantity=185", true),
            ("Observation?value-quantity=185.0", true),
            ("Observation?value-quantity=186", false),
            ("Observation?value-quantity=184.6", false),
            (
                "Observation?value-quantity=185|http://unitsofmeasure.org|[lb_av]",
                true,
            ),
            (
                "Observation?value-quantity=185|http://unitsofmeasure.org|kg",
                false,
            ),
            (
                "Observation?value-quantity=185|http://snomed.info/sct|[lb_av]",
                false,
            ),
            // number||code matches the code or the unit
            ("Observation?value-quantity=185||lbs", true),
            ("Observation?value-quantity=185||[lb_av]", true),
            ("Observation?value-quantity=185||kg", false),
            // no unit conversion: 185 lb is about 83.9 kg, still no match
            (
                "Observation?value-quantity=83.9|http://unitsofmeasure.org|kg",
                false,
            ),
            ("Observation?value-quantity=eq185", true),
            ("Observation?value-quantity=eq18", false),
            ("Observation?value-quantity=ne186", true),
            ("Observation?value-quantity=ne185", false),
            ("Observation?value-quantity=gt180", true),
            ("Observation?value-quantity=gt185", false),
            ("Observation?value-quantity=lt190||lbs", true),
            ("Observation?value-quantity=lt180", false),
            ("Observation?value-quantity=ge185", true),
            ("Observation?value-quantity=ge186", false),
            ("Observation?value-quantity=le185", true),
            ("Observation?value-quantity=le184", false),
            ("Observation?value-quantity=sa184", true),
            ("Observation?value-quantity=sa185", false),
            ("Observation?value-quantity=eb186", true),
            ("Observation?value-quantity=eb185", false),
            // ap: 200 ± 20 reaches 180; 210 ± 21 starts at 189
            ("Observation?value-quantity=ap200", true),
            (
                "Observation?value-quantity=ap170|http://unitsofmeasure.org|[lb_av]",
                true,
            ),
            ("Observation?value-quantity=ap210", false),
            ("Observation?value-quantity:missing=false", true),
            ("Observation?value-quantity:missing=true", false),
            ("Observation?combo-value-quantity=185", true),
            ("Observation?component-value-quantity=185", false),
            ("Observation?component-value-quantity:missing=true", true),
        ],
    );
    // "valueQuantity": {"value": 6.3, "unit": "mmol/l", "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    table(
        "Observation-f001.json",
        &[
            (
                "Observation?value-quantity=6.3|http://unitsofmeasure.org|mmol/L",
                true,
            ),
            ("Observation?value-quantity=6.3||mmol/l", true),
            ("Observation?value-quantity=6.3||mg/dL", false),
            ("Observation?value-quantity=6", true),
            ("Observation?value-quantity=6.30", true),
            ("Observation?value-quantity=6.31", false),
            ("Observation?value-quantity=gt6.2", true),
            ("Observation?value-quantity=gt6.3", false),
        ],
    );
    // "length": {"value": 140, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"}
    table(
        "Encounter-f001.json",
        &[
            ("Encounter?length=140", true),
            ("Encounter?length=140|http://unitsofmeasure.org|min", true),
            ("Encounter?length=lt141||min", true),
            // 140 min is 2.33 h, but units are not converted
            ("Encounter?length=gt2|http://unitsofmeasure.org|h", false),
            ("Encounter?length=ap150", true),
            ("Encounter?length=ap160", false),
        ],
    );
    table(
        "Encounter-example.json",
        &[
            ("Encounter?length:missing=true", true),
            ("Encounter?length=ne1", false),
        ],
    );
}

#[test]
fn composite_observation_components() {
    // components: 8480-6 (systolic) 107 mm[Hg]; 8462-4 (diastolic) 60 mm[Hg]
    table(
        "Observation-blood-pressure.json",
        &[
            (
                "Observation?component-code-value-quantity=http://loinc.org|8480-6$gt100",
                true,
            ),
            (
                "Observation?component-code-value-quantity=http://loinc.org|8462-4$gt100",
                false,
            ),
            ("Observation?component-code-value-quantity=8462-4$60", true),
            // both components must hold on the same component element
            ("Observation?component-code-value-quantity=8480-6$60", false),
            (
                "Observation?component-code-value-quantity=8480-6$107|http://unitsofmeasure.org|mm[Hg]",
                true,
            ),
            (
                "Observation?component-code-value-quantity=8480-6$107|http://unitsofmeasure.org|mmHg",
                false,
            ),
            (
                "Observation?component-code-value-quantity=http://snomed.info/sct|271649006$le107",
                true,
            ),
            ("Observation?component-code-value-quantity=8480-6$lt107", false),
            (
                "Observation?component-code-value-quantity=9999-9$1,8462-4$ap55",
                true,
            ),
            ("Observation?combo-code-value-quantity=8480-6$107", true),
            // the panel code (85354-9) is on the root, which has no value
            ("Observation?combo-code-value-quantity=85354-9$107", false),
            ("Observation?code-value-quantity=85354-9$107", false),
            ("Observation?component-code-value-quantity:missing=false", true),
        ],
    );
    // code 29463-7 (and 3141-9, 27113001…), valueQuantity 185 [lb_av]
    table(
        "Observation-example.json",
        &[
            (
                "Observation?code-value-quantity=http://loinc.org|29463-7$185",
                true,
            ),
            (
                "Observation?code-value-quantity=http://loinc.org|3141-9$gt100",
                true,
            ),
            ("Observation?code-value-quantity=29463-7$ge200", false),
            (
                "Observation?code-value-quantity=http://snomed.info/sct|29463-7$185",
                false,
            ),
            (
                "Observation?component-code-value-quantity=29463-7$185",
                false,
            ),
        ],
    );
    // code 55233-1, valueCodeableConcept SNOMED 10828004 "Positive"
    table(
        "Observation-example-genetics-1.json",
        &[
            (
                "Observation?code-value-concept=http://loinc.org|55233-1$http://snomed.info/sct|10828004",
                true,
            ),
            (
                "Observation?code-value-concept=http://loinc.org|55233-1$http://snomed.info/sct|260385009",
                false,
            ),
            ("Observation?value-concept=10828004", true),
            ("Observation?value-concept:not=10828004", false),
            ("Observation?value-concept:text=posit", true),
        ],
    );
}

#[test]
fn dates_and_every_prefix() {
    // "effectiveDateTime": "2016-03-28"
    table(
        "Observation-example.json",
        &[
            ("Observation?date=2016-03-28", true),
            ("Observation?date=2016-03", true),
            ("Observation?date=2016-03-29", false),
            ("Observation?date=eq2016", true),
            ("Observation?date=eq2015", false),
            ("Observation?date=ne2016-03-29", true),
            ("Observation?date=ne2016-03-28", false),
            ("Observation?date=gt2016-03-27", true),
            ("Observation?date=gt2016-03-28", false),
            ("Observation?date=lt2016-03-29", true),
            ("Observation?date=lt2016-03-28", false),
            ("Observation?date=ge2016-03-28", true),
            ("Observation?date=ge2016-03-29", false),
            ("Observation?date=le2016-03-28", true),
            ("Observation?date=le2016-03-27", false),
            ("Observation?date=sa2016-03-27", true),
            ("Observation?date=sa2016-03-28", false),
            ("Observation?date=eb2016-03-29", true),
            ("Observation?date=eb2016-03-28", false),
            // ap: widened by 10 % of the gap to now (more than a year for 2016-03-20)
            ("Observation?date=ap2016-03-28", true),
            ("Observation?date=ap2016-03-20", true),
            ("Observation?date=ap2000", false),
            ("Observation?date:missing=false", true),
        ],
    );
    // "effectivePeriod": {"start": "2013-04-02T09:30:10+01:00"} (no end: ongoing)
    table(
        "Observation-f001.json",
        &[
            ("Observation?date=gt2020", true),
            ("Observation?date=2013-04-02", false),
            ("Observation?date=sa2013-04-01", true),
            ("Observation?date=lt2013-04-01", false),
            ("Observation?date=ge2013-04-02T08:30:10Z", true),
            ("Observation?date=eb2014", false),
        ],
    );
    // "period": 2015-01-17T16:00:00+10:00 .. 16:30:00+10:00 (06:00Z .. 06:30Z)
    table(
        "Encounter-home.json",
        &[
            ("Encounter?date=2015-01-17", true),
            ("Encounter?date=2015-01-17T16:15:00%2B10:00", false),
            ("Encounter?date=ge2015-01-17T16:15:00%2B10:00", true),
            ("Encounter?date=sa2015-01-17T05:59Z", true),
            ("Encounter?date=sa2015-01-17T06:00Z", false),
            ("Encounter?date=eb2015-01-17T06:31Z", true),
            ("Encounter?date=ne2015-01-18", true),
        ],
    );
    // "birthDate": "1974-12-25"
    table(
        "Patient-example.json",
        &[
            ("Patient?birthdate=1974-12-25", true),
            ("Patient?birthdate=ap1975", true),
            ("Patient?birthdate=ap1990", false),
            ("Patient?birthdate=lt1975", true),
            ("Patient?birthdate=gt1975", false),
        ],
    );
    // meta.lastUpdated 2019-11-01T09:29:23.356+11:00 is 2019-10-31 in UTC
    table(
        "ValueSet-example-expansion.json",
        &[
            ("ValueSet?_lastUpdated=2019-10-31", true),
            ("ValueSet?_lastUpdated=2019-11-01", false),
            ("ValueSet?date=2015-06-22", true),
        ],
    );
    // "onsetDateTime": "2012-05-24"; Condition-example2 has "onsetString" only
    table(
        "Condition-example.json",
        &[
            ("Condition?onset-date=2012-05", true),
            ("Condition?onset-date=2013", false),
        ],
    );
    table(
        "Condition-example2.json",
        &[
            ("Condition?onset-date:missing=true", true),
            ("Condition?onset-date=ne2012", false),
            ("Condition?onset-info=approx", true),
            ("Condition?onset-info=november", false),
            ("Condition?onset-info:contains=november", true),
        ],
    );
    table(
        "Immunization-historical.json",
        &[
            ("Immunization?date:missing=true", true),
            ("Immunization?date=2012", false),
        ],
    );
}

#[test]
fn strings() {
    // names: official Peter James Chalmers; usual Jim; maiden Peter James Windsor;
    // address 534 Erewhon St, PleasantVille, Rainbow, Vic 3999
    table(
        "Patient-example.json",
        &[
            ("Patient?name=peter", true),
            ("Patient?name=Chalm", true),
            ("Patient?name=windsor", true),
            ("Patient?name=smith", false),
            ("Patient?name=almers", false),
            ("Patient?name:contains=almers", true),
            ("Patient?name:contains=xyz", false),
            ("Patient?family=chalmers", true),
            ("Patient?family:exact=Chalmers", true),
            ("Patient?family:exact=chalmers", false),
            ("Patient?given=jim", true),
            ("Patient?given:exact=Jim", true),
            ("Patient?given:exact=Jimmy", false),
            ("Patient?address-city=pleasant", true),
            ("Patient?address-city=rainbow", false),
            ("Patient?address=Rainbow", true),
            ("Patient?address-postalcode=3999", true),
            ("Patient?address-state=vic", true),
            ("Patient?address-country:missing=true", true),
            ("Patient?name:missing=false", true),
        ],
    );
    table(
        "Patient-f001.json",
        &[
            ("Patient?name=van de", true),
            ("Patient?family=van%20de%20heuvel", true),
            // starts-with on each part: "van de Heuvel" does not start with "heuvel"
            ("Patient?name=heuvel", false),
            ("Patient?address-country=NLD", true),
            ("Patient?address-country=NL%C3%84", false),
        ],
    );
    // "lotNumber": "AAJN11K"
    table(
        "Immunization-example.json",
        &[
            ("Immunization?lot-number=aajn", true),
            ("Immunization?lot-number:exact=AAJN11K", true),
            ("Immunization?lot-number:exact=aajn11k", false),
        ],
    );
}

#[test]
fn tokens() {
    table(
        "Observation-example.json",
        &[
            ("Observation?code=29463-7", true),
            ("Observation?code=http://loinc.org|29463-7", true),
            ("Observation?code=http://snomed.info/sct|29463-7", false),
            (
                "Observation?code=http://acme.org/devices/clinical-codes|",
                true,
            ),
            ("Observation?code=|29463-7", false),
            ("Observation?code:not=29463-7", false),
            ("Observation?code:not=8867-4", true),
            ("Observation?code:text=body w", true),
            ("Observation?code:text=height", false),
            ("Observation?category=vital-signs", true),
            ("Observation?category=laboratory", false),
            ("Observation?status=final", true),
            ("Observation?status=|final", true),
            ("Observation?status=amended", false),
            ("Observation?_id=example", true),
            ("Observation?_id=f001", false),
        ],
    );
    // identifier: type v2-0203|MR, system urn:oid:1.2.36.146.595.217.0.1, value 12345;
    // telecom phones; gender male; active true; deceasedBoolean false
    table(
        "Patient-example.json",
        &[
            ("Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|12345", true),
            ("Patient?identifier=12345", true),
            ("Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|54321", false),
            (
                "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345",
                true,
            ),
            (
                "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|654321",
                false,
            ),
            (
                "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|SS|12345",
                false,
            ),
            ("Patient?identifier:text=anything", false),
            ("Patient?gender=male", true),
            ("Patient?gender=female", false),
            ("Patient?gender:not=female", true),
            ("Patient?active=true", true),
            ("Patient?active=false", false),
            ("Patient?phone=(03) 5555 6473", true),
            ("Patient?phone=0648352638", false),
            ("Patient?email:missing=true", true),
            // deceased: `Patient.deceased.exists() and Patient.deceased != false`
            ("Patient?deceased=false", true),
            ("Patient?deceased=true", false),
        ],
    );
    table(
        "Patient-pat1.json",
        &[
            (
                "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|654321",
                true,
            ),
            // no deceased[x]: `exists()` is false, so the expression is false
            ("Patient?deceased=false", true),
        ],
    );
    table(
        "Patient-f001.json",
        &[
            // identifier without a type
            (
                "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|738472983",
                false,
            ),
            ("Patient?identifier=urn:oid:2.16.840.1.113883.2.4.6.3|738472983", true),
            ("Patient?email=p.heuvel@gmail.com", true),
            ("Patient?phone=p.heuvel@gmail.com", false),
            ("Patient?telecom=0648352638", true),
        ],
    );
    table(
        "Encounter-example.json",
        &[
            ("Encounter?class=IMP", true),
            (
                "Encounter?class=http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB",
                false,
            ),
            ("Encounter?status=in-progress", true),
            ("Encounter?status:not=in-progress", false),
        ],
    );
    table(
        "Condition-example.json",
        &[
            ("Condition?clinical-status=active", true),
            ("Condition?clinical-status=resolved", false),
            ("Condition?severity=http://snomed.info/sct|24484000", true),
            ("Condition?category=encounter-diagnosis", true),
            ("Condition?code:text=burnt", true),
            ("Condition?body-site:missing=false", true),
        ],
    );
    // medication is a contained reference (#med0320), not a CodeableConcept
    table(
        "MedicationRequest-medrx0302.json",
        &[
            ("MedicationRequest?code=324252006", false),
            ("MedicationRequest?code:missing=true", true),
            ("MedicationRequest?status=active", true),
            ("MedicationRequest?intent=order", true),
            ("MedicationRequest?authoredon=2015-01-15", true),
            (
                "MedicationRequest?identifier=http://www.bmc.nl/portal/prescriptions|12345689",
                true,
            ),
        ],
    );
}

#[test]
fn references() {
    table(
        "Observation-example.json",
        &[
            ("Observation?subject=Patient/example", true),
            ("Observation?subject=Patient/other", false),
            ("Observation?subject:Patient=example", true),
            ("Observation?subject:Group=example", false),
            ("Observation?patient=example", true),
            ("Observation?encounter=Encounter/example", true),
            ("Observation?encounter:missing=true", false),
            ("Observation?performer:missing=true", true),
        ],
    );
    table(
        "Observation-vitals-panel.json",
        &[
            ("Observation?has-member=Observation/blood-pressure", true),
            ("Observation?has-member=Observation/nope", false),
        ],
    );
    // "basedOn": [{"identifier": {"system": "https://acme.org/identifiers", "value": "1234"}}]
    table(
        "Observation-blood-pressure.json",
        &[
            (
                "Observation?based-on:identifier=https://acme.org/identifiers|1234",
                true,
            ),
            ("Observation?based-on:identifier=1235", false),
            (
                "Observation?_profile=http://hl7.org/fhir/StructureDefinition/vitalsigns",
                true,
            ),
        ],
    );
    table(
        "Encounter-f001.json",
        &[
            ("Encounter?participant=Practitioner/f002", true),
            ("Encounter?practitioner=f002", true),
            ("Encounter?practitioner=f003", false),
            ("Encounter?service-provider=Organization/f001", true),
            ("Encounter?patient=Patient/f001", true),
            ("Encounter?patient=Patient/example", false),
        ],
    );
    table(
        "Immunization-example.json",
        &[
            ("Immunization?performer=Practitioner/example", true),
            ("Immunization?location=Location/1", true),
            ("Immunization?manufacturer=Organization/hl7", true),
            ("Immunization?manufacturer=Organization/other", false),
            ("Immunization?patient:Patient=example", true),
        ],
    );
    table(
        "DiagnosticReport-ultrasound.json",
        &[
            (
                "DiagnosticReport?media=Media/1.2.840.11361907579238403408700.3.1.04.19970327150033",
                true,
            ),
            ("DiagnosticReport?result:missing=true", true),
        ],
    );
    table(
        "DiagnosticReport-f201.json",
        &[
            ("DiagnosticReport?conclusion=188340000", true),
            // issued 2012-12-01T12:00:00+01:00 = 11:00:00Z
            ("DiagnosticReport?issued=2012-12-01T11:00:00Z", true),
            ("DiagnosticReport?issued=2012-12-01T12:00:00Z", false),
            ("DiagnosticReport?performer=Organization/f203", true),
            ("DiagnosticReport?performer:Practitioner=f203", false),
        ],
    );
    table(
        "AllergyIntolerance-example.json",
        &[
            ("AllergyIntolerance?patient=Patient/example", true),
            ("AllergyIntolerance?criticality=high", true),
            ("AllergyIntolerance?criticality=low", false),
            ("AllergyIntolerance?code=227493005", true),
        ],
    );
}

#[test]
fn uris() {
    // "url": "http://hl7.org/fhir/Questionnaire/f201"
    table(
        "Questionnaire-f201.json",
        &[
            (
                "Questionnaire?url=http://hl7.org/fhir/Questionnaire/f201",
                true,
            ),
            ("Questionnaire?url=http://hl7.org/fhir/Questionnaire", false),
            (
                "Questionnaire?url:below=http://hl7.org/fhir/Questionnaire",
                true,
            ),
            ("Questionnaire?url:below=http://hl7.org/fhir/", true),
            // below is by path segment, not by characters
            ("Questionnaire?url:below=http://hl7.org/fhir/Quest", false),
            (
                "Questionnaire?url:above=http://hl7.org/fhir/Questionnaire/f201/x",
                true,
            ),
            (
                "Questionnaire?url:above=http://hl7.org/fhir/Questionnaire/f2011",
                false,
            ),
            ("Questionnaire?url:missing=false", true),
        ],
    );
    table(
        "ValueSet-example-expansion.json",
        &[
            (
                "ValueSet?url=http://hl7.org/fhir/ValueSet/example-expansion",
                true,
            ),
            ("ValueSet?url=http://hl7.org/fhir/ValueSet/example", false),
            (
                "ValueSet?expansion=urn:uuid:42316ff8-2714-4680-9980-f37a6d1a71bc",
                true,
            ),
            (
                "ValueSet?_profile:below=http://hl7.org/fhir/StructureDefinition",
                true,
            ),
            ("ValueSet?_profile:above=http://hl7.org/fhir", false),
        ],
    );
}

#[test]
fn what_cannot_be_evaluated_is_rejected() {
    for (criteria, expected) in [
        (
            "Location?near=42.25|-83.69|10|km",
            "special search parameter",
        ),
        (
            "Observation?code:in=http://hl7.org/fhir/ValueSet/x",
            "terminology service",
        ),
        (
            "Observation?code:below=http://loinc.org|LP1",
            "terminology service",
        ),
        ("Observation?_text=weight", "is not supported"),
        (
            "Observation?value-quantity=1e2",
            "exponents are not supported",
        ),
        (
            "Observation?subject.name=peter",
            "name the type, e.g. 'subject:",
        ),
    ] {
        let error = SearchQuery::parse(criteria).expect_err(criteria);
        assert!(
            error.message().contains(expected),
            "{criteria}: {}",
            error.message()
        );
    }
}
